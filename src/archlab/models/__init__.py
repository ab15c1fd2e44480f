"""The architectures. Importing this package registers every family."""
from archlab.models.registry import (  # noqa: F401
    ModelCard, Paper, create_model, list_families, list_models, model_builder, model_card,
    model_config, register_model,
)
# One import per family file, in the order the field met them.
from archlab.models import lenet, alexnet, vgg, inception, bn_inception  # noqa: F401,E402
from archlab.models import resnet, inception_v4, xception, mobilenet  # noqa: F401,E402
from archlab.models import efficientnet, regnet  # noqa: F401,E402
from archlab.models import vit, convnext  # noqa: F401,E402
from archlab.models.layers import ImageClassifier  # noqa: F401,E402
from archlab.models.weights import (  # noqa: F401,E402
    CheckpointError, load_state_dict, read_state_dict, save_state_dict,
)
