"""Training: recipes, the trainer and its plugins, losses, schedules, checkpoints;
evaluation and prediction with what a run leaves behind."""
from archlab.train.device import resolve_device  # noqa: F401
from archlab.train.evaluate import (  # noqa: F401
    Evaluation, evaluate, evaluate_tta, load_trained, predict,
)
from archlab.train.metrics import Meter, Metrics  # noqa: F401
from archlab.train.recipe import Recipe, presets  # noqa: F401
from archlab.train.recipe import parse_assignments  # noqa: F401
from archlab.train.checkpoint import has_checkpoint, load_checkpoint, read_model  # noqa: F401
from archlab.train.plugin import Plugin  # noqa: F401
from archlab.train.plugins import plugins_for  # noqa: F401
from archlab.train.trainer import (  # noqa: F401
    FitResult, Trainer, TrainingDiverged, TrainingInterrupted, fit,
)
from archlab.train.entry import fine_tune, fine_tune_at_resolution  # noqa: F401
from archlab.train.distill import Distiller  # noqa: F401
from archlab.train.ema import ModelEMA  # noqa: F401
from archlab.train.mlflow_log import MLflowLogger, log_final_metrics  # noqa: F401
from archlab.train.finetune import TransferModel  # noqa: F401
from archlab.train.lr_find import LRFinderResult, lr_find  # noqa: F401
from archlab.train.progressive import ProgressivePlan, parse_cli  # noqa: F401
from archlab.train.deepen import DeepenReport, deepen  # noqa: F401
from archlab.train.distributed import SyncBatchNorm  # noqa: F401
from archlab.train.tta import VIEWS, parse_tta, tta_predict, tta_views  # noqa: F401
from archlab.train.step_curve import StepCurve, step_columns  # noqa: F401
