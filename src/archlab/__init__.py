"""archlab: a laboratory for image-classification architectures.

    import archlab
    archlab.list_models("resnet*")
    model = archlab.create_model("resnet50", num_classes=10, in_chans=1)
    archlab.transforms_for(model)                  # what its weights expect of an image
    archlab.model_card("vgg16").key_idea
    archlab.profile("vgg16", img_size=224).macs
    data = archlab.load_dataset("fashion-mnist")
    result = archlab.fit("resnet20", data, archlab.Recipe(epochs=2), run_dir="runs/r20")
    study = archlab.compare("quick-tour")          # many architectures, one protocol
    archlab.report("studies/quick-tour")           # its table, report.html and CSV
"""
from archlab._version import __version__
from archlab.explain import explain  # loads the package, then archlab.explain is the function
from archlab.analysis.profile import Profile, profile
from archlab.data import ImageData, load_dataset, transforms_for
from archlab.models import ModelCard, create_model, list_families, list_models, model_card
from archlab.models.convert import convert_file
from archlab.models.weights import load_checkpoint, save_state_dict
from archlab.study import compare, report
from archlab.train import (
    Evaluation, FitResult, Recipe, TrainingDiverged, TrainingInterrupted, deepen, evaluate,
    fine_tune, fine_tune_at_resolution, fit, load_trained, lr_find, predict, tta_predict,
)


__all__ = [
    "Evaluation", "FitResult", "ImageData", "ModelCard", "Profile", "Recipe",
    "TrainingDiverged", "TrainingInterrupted", "compare", "convert_file", "create_model", "deepen",
    "evaluate", "explain", "fine_tune", "fine_tune_at_resolution", "fit", "list_families",
    "list_models", "load_checkpoint", "load_dataset", "load_trained", "lr_find",
    "model_card", "predict", "profile", "report", "save_state_dict", "transforms_for",
    "tta_predict",
]
