"""archlab: a laboratory for image-classification architectures.

    import archlab
    archlab.list_models("resnet*")
    model = archlab.create_model("resnet50", num_classes=10, in_chans=1)
    archlab.model_card("vgg16").key_idea
    archlab.profile("vgg16", img_size=224).macs
"""
from archlab.analysis.profile import Profile, profile
from archlab.models import ModelCard, create_model, list_families, list_models, model_card
from archlab.models.convert import convert_file, load_checkpoint, save_state_dict

__version__ = "0.1.0"

__all__ = [
    "ModelCard", "Profile", "convert_file", "create_model", "list_families", "list_models",
    "load_checkpoint", "model_card", "profile", "save_state_dict",
]
