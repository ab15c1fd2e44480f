"""A training recipe: every choice that shapes a run, in one dataclass that reads YAML.

`Recipe()` is a sound default (SGD with Nesterov momentum, one-cycle, basic augmentation);
`Recipe.load("fashion-mnist")` reads a preset shipped in archlab/train/recipes/, and
`Recipe.load("my.yaml")` a file. Unknown keys are refused by name, so a typo never trains
silently with a default.

Fields left at None are decided for the run: the learning rate and weight decay by the
optimizer (SGD 0.1 and 5e-4; AdamW 1e-3 and 0.01, fastai's decoupled default), and bf16
autocast, channels_last and torch.compile by the device (on for CUDA, off on the CPU).
"""
from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from archlab.data import PRESETS, Augment

RECIPES_DIR = Path(__file__).parent / "recipes"
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("onecycle", "cosine", "step", "constant")


@dataclass
class Recipe:
    # -- the model -------------------------------------------------------------------
    model: str | None = None               # a registered name, when the recipe names one
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # create_model overrides
    small_input: bool | None = None        # None: for images of 64 px or less
    pretrained: str | None = None          # checkpoint path or 'tv:...', 'timm:...'
    image_size: int | None = None          # None: the data's side (in memory), else the card's
    init_from: str | None = None           # a shallower run/checkpoint (VGG's staged deepening)

    # -- the data --------------------------------------------------------------------
    batch_size: int = 128
    val_fraction: float = 0.1              # stratified hold-out of the training split
    train_fraction: float = 1.0            # stratified share of the rest to train on
    seed: int = 0
    normalize: str = "auto"                # dataset | model (card's) | auto: model if pretrained
    crop_pct: float = 0.875                # evaluation crop of file images
    workers: int | None = None             # DataLoader workers for files (None: up to 8)
    in_memory: bool = False                # decode image files once, at the training size

    # -- augmentation ----------------------------------------------------------------
    augment: str = "basic"                 # none | basic | alexnet | rrc | randaugment
    hflip: bool | None = None              # None: unless the dataset forbids it (digits)
    randaugment_n: int = 2
    randaugment_m: int = 9
    lighting: float = 0.1                  # PCA lighting std (alexnet preset)
    random_erasing: float = 0.0
    mixup: float = 0.0
    cutmix: float = 0.0

    # -- optimisation ----------------------------------------------------------------
    epochs: int = 10
    optimizer: str = "sgd"                 # sgd | adamw
    lr: float | None = None                # the peak learning rate
    weight_decay: float | None = None      # never on norms and biases
    momentum: float = 0.9                  # SGD (cycled by one-cycle)
    nesterov: bool = True
    betas: tuple[float, float] = (0.9, 0.99)  # AdamW: fastai's mom and sqr_mom
    eps: float = 1e-5
    schedule: str = "onecycle"             # onecycle | cosine | step | constant
    pct_start: float = 0.25                # one-cycle: share of steps spent warming up
    div: float = 25.0                      # one-cycle: start at lr / div
    div_final: float = 1e5                 # one-cycle: end at lr / div_final
    moms: tuple[float, float, float] | None = (0.95, 0.85, 0.95)  # one-cycle momentum; None: fixed
    warmup_epochs: float = 0.0             # cosine / step: linear warm-up
    min_lr: float = 0.0                    # cosine: the floor
    milestones: tuple[float, ...] = ()     # step: epochs where lr is multiplied by gamma
    gamma: float = 0.1
    label_smoothing: float = 0.0
    clip_grad: float | None = None         # max global gradient norm
    ema: float = 0.0                       # EMA decay of the weights (0.999...); 0 is off

    # -- transfer learning (fastai's fine_tune; train/finetune.py) ----------------------
    fine_tune: bool = False                # new head on the body; frozen, then unfrozen
    freeze_epochs: int = 1                 # phase 1: epochs with the body frozen (at lr)
    head: str = "concat"                   # concat (fastai's pooled MLP head) | linear
    unfrozen_lr: tuple[float, float] | None = None  # phase 2 (lo, hi); None: lr/200, lr/2
    frozen_bn: str = "train"               # norms in the frozen body: train | stats | frozen

    # -- knowledge distillation (DeiT; train/distill.py) --------------------------------
    teacher: str | None = None             # a run directory, a model file or a registered name
    distill: str = "none"                  # none | soft | hard
    distill_alpha: float = 0.5             # loss = (1 - alpha) CE(labels) + alpha distill
    distill_tau: float = 1.0               # soft distillation temperature

    # -- progressive learning (EfficientNetV2; train/progressive.py) --------------------
    progressive: dict[str, Any] | list | None = None  # {start_size, end_size, stages, ...}

    # -- machine and bookkeeping -----------------------------------------------------
    device: str = "auto"                   # auto | cpu | cuda | cuda:1 | mps
    amp: bool | None = None                # bf16 autocast
    channels_last: bool | None = None
    compile: bool | None = None
    threads: int | None = None             # torch CPU threads (None: torch's default)
    tensorboard: bool = False
    strict: bool = False                   # undecodable files are errors, not skips
    progress: bool = True
    sync_bn: bool = False                  # several processes (torchrun): batch norm over
                                           # the global batch, not each process's share

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)
        self.milestones = tuple(self.milestones)
        if self.moms is not None:
            self.moms = tuple(self.moms)
        if self.unfrozen_lr is not None:
            self.unfrozen_lr = tuple(self.unfrozen_lr)
        if isinstance(self.progressive, (list, tuple)):  # YAML keeps lists, not tuples
            self.progressive = [list(x) if isinstance(x, (list, tuple)) else x
                                for x in self.progressive]
        self.model_kwargs = dict(self.model_kwargs or {})
        self.validate()

    def validate(self) -> None:
        def choice(name: str, options) -> None:
            if getattr(self, name) not in options:
                raise ValueError(f"recipe: {name} must be one of {', '.join(options)}, "
                                 f"got {getattr(self, name)!r}")

        choice("optimizer", OPTIMIZERS)
        choice("schedule", SCHEDULES)
        choice("augment", PRESETS)
        choice("normalize", ("auto", "dataset", "model"))
        if self.epochs < 1:
            raise ValueError(f"recipe: epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"recipe: batch_size must be positive, got {self.batch_size}")
        for name in ("val_fraction", "pct_start", "label_smoothing", "random_erasing"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"recipe: {name} lies in [0, 1), got {getattr(self, name)}")
        if not 0.0 < self.train_fraction <= 1.0:
            raise ValueError(f"recipe: train_fraction lies in (0, 1], got {self.train_fraction}")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"recipe: ema is a decay in [0, 1), got {self.ema}")
        if self.lr is not None and self.lr <= 0:
            raise ValueError(f"recipe: lr must be positive, got {self.lr}")
        if self.schedule == "step" and not self.milestones:
            raise ValueError("recipe: the step schedule needs milestones (epochs)")
        if self.init_from and self.pretrained:
            raise ValueError("recipe: init_from (a shallower run of the same family) and "
                             "pretrained both give the first weights; keep one")
        choice("head", ("concat", "linear"))
        choice("frozen_bn", ("train", "stats", "frozen"))
        choice("distill", ("none", "soft", "hard"))
        if self.fine_tune and self.freeze_epochs < 0:
            raise ValueError(f"recipe: freeze_epochs must be 0 or more, got {self.freeze_epochs}")
        if self.unfrozen_lr is not None and not (
                len(self.unfrozen_lr) == 2 and 0 < self.unfrozen_lr[0] <= self.unfrozen_lr[1]):
            raise ValueError(f"recipe: unfrozen_lr is (lowest, highest) with 0 < lowest <= "
                             f"highest, got {self.unfrozen_lr}")
        if not 0.0 <= self.distill_alpha <= 1.0:
            raise ValueError(f"recipe: distill_alpha lies in [0, 1], got {self.distill_alpha}")
        if self.distill_tau <= 0:
            raise ValueError(f"recipe: distill_tau must be positive, got {self.distill_tau}")
        if self.progressive is not None:
            from archlab.train.progressive import ProgressivePlan  # checks the schedule's form

            ProgressivePlan.from_recipe(self)

    # -- resolved values -------------------------------------------------------------
    @property
    def peak_lr(self) -> float:
        return self.lr if self.lr is not None else (0.1 if self.optimizer == "sgd" else 1e-3)

    @property
    def total_epochs(self) -> int:
        """Epochs of the whole run: fine-tuning adds its frozen phase before `epochs`."""
        return self.epochs + (self.freeze_epochs if self.fine_tune else 0)

    @property
    def wd(self) -> float:
        if self.weight_decay is not None:
            return self.weight_decay
        return 5e-4 if self.optimizer == "sgd" else 0.01

    def augmentation(self, dataset_hflip: bool = True) -> Augment:
        return Augment(preset=self.augment,
                       hflip=dataset_hflip if self.hflip is None else self.hflip,
                       randaugment_n=self.randaugment_n, randaugment_m=self.randaugment_m,
                       lighting=self.lighting, random_erasing=self.random_erasing,
                       mixup=self.mixup, cutmix=self.cutmix)

    # -- (de)serialisation -----------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for k, v in out.items():
            if isinstance(v, tuple):
                out[k] = list(v)
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "recipe") -> "Recipe":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = [k for k in values if k not in known]
        if unknown:
            hints = []
            for k in unknown:
                close = difflib.get_close_matches(k, known, n=1)
                hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise ValueError(f"{source}: unknown field(s) {', '.join(hints)}")
        return cls(**values)

    def replace(self, **changes: Any) -> "Recipe":
        return self.from_dict({**self.to_dict(), **changes})

    @classmethod
    def from_yaml(cls, path: str | Path) -> "Recipe":
        import yaml

        path = Path(path)
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ValueError(f"{path} is not valid YAML: {e}") from None
        if not isinstance(values, dict):
            raise ValueError(f"{path}: a recipe is a mapping of field: value")
        return cls.from_dict(values, str(path))

    def to_yaml(self, path: str | Path | None = None) -> str:
        import yaml

        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def load(cls, name_or_path: str | Path) -> "Recipe":
        """A preset by name (see `presets()`) or a YAML file."""
        path = Path(name_or_path)
        if path.suffix in (".yaml", ".yml") or path.is_file():
            if not path.exists():
                raise FileNotFoundError(f"recipe file {path} does not exist")
            return cls.from_yaml(path)
        preset = RECIPES_DIR / f"{name_or_path}.yaml"
        if not preset.exists():
            raise ValueError(f"no recipe preset {str(name_or_path)!r}; presets: "
                             f"{', '.join(presets()) or 'none'}; or give a .yaml path")
        return cls.from_yaml(preset)


def presets() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))
