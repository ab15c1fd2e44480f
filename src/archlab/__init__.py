"""archlab: a laboratory for image-classification architectures."""
from archlab.models import ModelCard, create_model, list_families, list_models, model_card

__version__ = "0.1.0"

__all__ = ["ModelCard", "create_model", "list_families", "list_models", "model_card"]
