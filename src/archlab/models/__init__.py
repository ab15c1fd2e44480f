"""The architectures. Importing this package registers every family."""
from archlab.models.registry import (  # noqa: F401
    ModelCard, Paper, create_model, list_families, list_models, model_card, register_model,
)
from archlab.models import alexnet  # noqa: F401,E402  (one import per family file)
