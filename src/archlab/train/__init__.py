"""Training: recipes, the trainer, losses, schedules, checkpoints; evaluation and prediction
with what a run leaves behind."""
from archlab.train.checkpoint import has_checkpoint, load_checkpoint  # noqa: F401
from archlab.train.evaluate import (  # noqa: F401
    Evaluation, evaluate, evaluate_tta, load_trained, predict,
)
from archlab.train.metrics import Meter, Metrics  # noqa: F401
from archlab.train.recipe import Recipe, presets  # noqa: F401
from archlab.train.trainer import (  # noqa: F401
    FitResult, Trainer, TrainingDiverged, TrainingInterrupted, fit, resolve_device,
)
from archlab.train.distill import Distiller  # noqa: F401
from archlab.train.finetune import TransferModel, fine_tune  # noqa: F401
from archlab.train.lr_find import LRFinderResult, lr_find  # noqa: F401
from archlab.train.progressive import ProgressivePlan, fine_tune_at_resolution  # noqa: F401
from archlab.train.deepen import DeepenReport, deepen  # noqa: F401
from archlab.train.distributed import SyncBatchNorm  # noqa: F401
from archlab.train.tta import VIEWS, parse_tta, tta_predict, tta_views  # noqa: F401
