"""A training recipe: every choice that shapes a run, in one dataclass that reads YAML.

`Recipe()` is a sound default (SGD with Nesterov momentum, one-cycle, basic augmentation);
`Recipe.load("fashion-mnist")` reads a preset shipped in archlab/train/recipes/, and
`Recipe.load("my.yaml")` a file. Unknown keys are refused by name, so a typo never trains
silently with a default.

Fields left at None are decided for the run: the learning rate and weight decay by the
optimizer (SGD 0.1 and 5e-4; AdamW 1e-3 and 0.01, fastai's decoupled default), and bf16
autocast, channels_last and torch.compile by measuring them on the model and the device
before the first step (train/trainer.py, analysis/speed.py).
"""
from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from archlab.analysis.speed import PRECISIONS
from archlab.data import PRESETS, Augment

RECIPES_DIR = Path(__file__).parent / "recipes"
OPTIMIZERS = ("sgd", "adamw")
LOGGERS = ("tensorboard", "mlflow")
SCHEDULES = ("onecycle", "cosine", "step", "constant")


@dataclass
class Recipe:
    # A field with a "help" in its metadata is also a flag of `archlab train` (--batch-size
    # for batch_size; a bool is a --x/--no-x switch): the help is written once, here.

    # -- the model -------------------------------------------------------------------
    model: str | None = None               # a registered name, when the recipe names one
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # create_model overrides
    small_input: bool | None = field(default=None, metadata={
        "help": "the 28-64 px (CIFAR-style) variant of the model"})  # None: for <= 64 px
    pretrained: str | None = field(default=None, metadata={
        "help": "start from a checkpoint or 'tv:...' / 'timm:...'"})
    image_size: int | None = field(default=None, metadata={
        "help": "side in pixels (default: the data's, or the card's)"})
    init_from: str | None = field(default=None, metadata={
        "help": "a trained shallower run of the family (VGG's staged deepening: its layers "
                "initialise this deeper net)"})

    # -- the data --------------------------------------------------------------------
    batch_size: int = field(default=128, metadata={"help": "images per step"})
    val_fraction: float = field(default=0.1, metadata={
        "help": "stratified hold-out (default 0.1)"})  # of the training split
    train_fraction: float = field(default=1.0, metadata={
        "help": "stratified share of the rest to train on"})
    seed: int = field(default=0, metadata={
        "help": "the run's seed (split, init, order, augmentation)"})
    deterministic: bool = field(default=False, metadata={
        "help": "repeatable GPU runs: cuDNN's deterministic algorithms, no autotuning "
                "(slower; a CPU run is repeatable either way)"})
    normalize: str = "auto"                # dataset | model (card's) | auto: model if pretrained
    crop_pct: float = 0.875                # evaluation crop of file images
    workers: int | None = field(default=None, metadata={
        "help": "DataLoader workers for image files"})  # None: up to 8
    in_memory: bool = False                # decode image files once, at the training size

    # -- augmentation ----------------------------------------------------------------
    augment: str = field(default="basic", metadata={
        "help": "the augmentation preset", "choices": PRESETS})
    hflip: bool | None = None              # None: unless the dataset forbids it (digits)
    randaugment_n: int = 2
    randaugment_m: int = 9
    lighting: float = 0.1                  # PCA lighting std (alexnet preset)
    random_erasing: float = field(default=0.0, metadata={"help": "probability per image"})
    mixup: float = field(default=0.0, metadata={"help": "mixup alpha (0: off)"})
    cutmix: float = field(default=0.0, metadata={"help": "cutmix alpha (0: off)"})

    # -- optimisation ----------------------------------------------------------------
    epochs: int = field(default=10, metadata={"help": "passes over the training data"})
    budget_minutes: float | None = field(default=None, metadata={
        "help": "train for this wall time instead: the schedule is laid over the minutes "
                "(its shape still in --epochs) and the run ends when they are spent"})
    optimizer: str = field(default="sgd", metadata={
        "help": "sgd (Nesterov momentum) or adamw", "choices": OPTIMIZERS})
    lr: float | None = field(default=None, metadata={
        "help": "peak learning rate (default: SGD 0.1, AdamW 1e-3)"})
    weight_decay: float | None = field(default=None, metadata={
        "help": "not applied to norms and biases"})
    momentum: float = 0.9                  # SGD (cycled by one-cycle)
    nesterov: bool = True
    betas: tuple[float, float] = (0.9, 0.99)  # AdamW: fastai's mom and sqr_mom
    eps: float = 1e-5
    schedule: str = field(default="onecycle", metadata={
        "help": "the learning-rate schedule", "choices": SCHEDULES})
    pct_start: float = 0.25                # one-cycle: share of steps spent warming up
    div: float = 25.0                      # one-cycle: start at lr / div
    div_final: float = 1e5                 # one-cycle: end at lr / div_final
    moms: tuple[float, float, float] | None = (0.95, 0.85, 0.95)  # one-cycle momentum; None: fixed
    warmup_epochs: float = 0.0             # cosine / step: linear warm-up
    min_lr: float = 0.0                    # cosine: the floor
    milestones: tuple[float, ...] = ()     # step: epochs where lr is multiplied by gamma
    gamma: float = 0.1
    label_smoothing: float = field(default=0.0, metadata={"help": "e.g. 0.1"})
    clip_grad: float | None = field(default=None, metadata={"help": "max gradient norm"})
    ema: float = field(default=0.0, metadata={
        "help": "EMA decay of the weights, e.g. 0.999 (0: off)"})

    # -- transfer learning (fastai's fine_tune; train/finetune.py) ----------------------
    fine_tune: bool = field(default=False, metadata={
        "help": "transfer learning: new head, body frozen for --freeze-epochs, then unfrozen "
                "with learning rates spread over the layer groups (needs --pretrained)"})
    freeze_epochs: int = field(default=1, metadata={
        "help": "--fine-tune: epochs with the body frozen (default 1)"})  # phase 1, at lr
    head: str = field(default="concat", metadata={
        "help": "--fine-tune: the new head, concat (fastai's) or linear",
        "choices": ("concat", "linear")})
    unfrozen_lr: tuple[float, float] | None = field(default=None, metadata={
        "help": "--fine-tune: phase 2 learning rates, spread geometrically from the stem (LO) "
                "to the head (HI); default lr/200 .. lr/2",
        "nargs": 2, "metavar": ("LO", "HI")})
    frozen_bn: str = field(default="train", metadata={
        "help": "--fine-tune: norms of the frozen body: train (fastai), stats (BN statistics "
                "only) or frozen", "choices": ("train", "stats", "frozen")})

    # -- knowledge distillation (DeiT; train/distill.py) --------------------------------
    teacher: str | None = field(default=None, metadata={
        "help": "distil from a run directory (or model file) archlab trained"})  # or a name
    distill: str = field(default="none", metadata={
        "help": "none, soft (KL at --distill-tau) or hard (teacher's argmax; DeiT)",
        "choices": ("none", "soft", "hard")})
    distill_alpha: float = field(default=0.5, metadata={
        "help": "weight of the distillation loss (0.5)"})  # (1 - alpha) CE + alpha distill
    distill_tau: float = field(default=1.0, metadata={
        "help": "soft distillation temperature"})

    # -- progressive learning (EfficientNetV2; train/progressive.py) --------------------
    # {start_size, end_size, stages, ...}; the command line's short form is parsed by
    # archlab.train.progressive.parse_cli.
    progressive: dict[str, Any] | list | None = field(default=None, metadata={
        "help": "progressive resizing (EfficientNetV2): 16-32x4 grows the image side from "
                "16 px to 32 px in 4 stages; 0:16,3:24 sets sizes by epoch",
        "metavar": "START-END[xSTAGES]|EPOCH:SIZE,..."})

    # -- machine and bookkeeping -----------------------------------------------------
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, cuda:N or mps"})
    # The speed settings (archlab/analysis/speed.py). 'auto' and None are measured on the
    # model and device before the first step: the fastest of the candidates is kept, and
    # the choice printed and recorded with the run (speed.json).
    precision: str = field(default="auto", metadata={
        "help": "fp32, bf16, fp16 (autocast) or auto: the fastest measured, bf16 only where "
                "the device has bf16 matrix units", "choices": ("auto", *PRECISIONS)})
    channels_last: bool | None = field(default=None, metadata={
        "help": "channels_last memory format (default: measured)"})
    compile: bool | None = field(default=None, metadata={
        "help": "torch.compile (default: measured, for runs long enough to pay for it)"})
    threads: int | None = field(default=None, metadata={
        "help": "torch CPU threads"})  # None: torch's default
    tensorboard: bool = field(default=False, metadata={
        "help": "also log to TensorBoard (the same as --log tensorboard)"})
    # Where else the run is written, for the tools people look at runs with: tensorboard
    # (train/run_log.py), mlflow or mlflow:URI (train/mlflow_log.py). A study takes it from
    # its protocol's top-level log: key, outside the run keys: it is not how a run trains.
    log: tuple[str, ...] = field(default=(), metadata={
        "help": "also log the run to tensorboard, or to mlflow[:URI] (a tracking server "
                "http://host:5000, file:///path/mlruns or a folder; default: "
                "$MLFLOW_TRACKING_URI, else MLflow's own); repeat, or separate by commas",
        "action": "append", "metavar": "LOGGER"})
    strict: bool = field(default=False, metadata={
        "help": "stop at the first undecodable file instead of skipping it"})
    progress: bool = field(default=True, metadata={"help": "the progress bar"})
    curve_every: int = field(default=50, metadata={
        "help": "record the mean training loss and error every N optimizer steps "
                "(steps.jsonl; 0: off)"})
    # Modules (names of model.named_modules(), e.g. conv1) whose gradient norm the step
    # curve records, a column grad_norm:<name> each (train/step_curve.py); needs curve_every.
    grad_norms: tuple[str, ...] = ()
    # Several processes (torchrun): batch norm over the global batch, not each one's share.
    sync_bn: bool = field(default=False, metadata={
        "help": "under torchrun: batch norm over the global batch"})

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)
        self.milestones = tuple(self.milestones)
        self.grad_norms = tuple(self.grad_norms)
        self.log = _logger_items(self.log)
        if self.moms is not None:
            self.moms = tuple(self.moms)
        if self.unfrozen_lr is not None:
            self.unfrozen_lr = tuple(self.unfrozen_lr)
        if isinstance(self.progressive, (list, tuple)):  # YAML keeps lists, not tuples
            self.progressive = [list(x) if isinstance(x, (list, tuple)) else x
                                for x in self.progressive]
        self.model_kwargs = dict(self.model_kwargs or {})
        for name in ("channels_last", "compile"):  # YAML may say auto for "measure it"
            if getattr(self, name) == "auto":
                setattr(self, name, None)
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
        choice("precision", ("auto", *PRECISIONS))
        if self.epochs < 1:
            raise ValueError(f"recipe: epochs must be at least 1, got {self.epochs}")
        if self.budget_minutes is not None:
            self._check_budget()
        if self.curve_every < 0:
            raise ValueError(f"recipe: curve_every is a number of steps (0: off), got "
                             f"{self.curve_every}")
        if self.grad_norms and not self.curve_every:
            raise ValueError("recipe: grad_norms are recorded in the step curve; set "
                             "curve_every above 0")
        if not all(isinstance(n, str) and n for n in self.grad_norms):
            raise ValueError(f"recipe: grad_norms is a list of module names (e.g. [conv1]), "
                             f"got {list(self.grad_norms)}")
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
        _ = self.loggers                   # refuses an unknown logger, naming it
        if self.progressive is not None:
            from archlab.train.progressive import ProgressivePlan  # checks the schedule's form

            ProgressivePlan.from_recipe(self)

    def _check_budget(self) -> None:
        if not self.budget_minutes > 0:
            raise ValueError(f"recipe: budget_minutes must be positive, got "
                             f"{self.budget_minutes}")
        # Their phases are counted in epochs, which a budget leaves open (train/budget.py).
        for name, on in (("fine_tune", self.fine_tune),
                         ("progressive", self.progressive is not None)):
            if on:
                raise ValueError(f"recipe: budget_minutes cannot be combined with {name}, "
                                 "whose stages are counted in epochs; set epochs instead")

    # -- resolved values -------------------------------------------------------------
    @property
    def peak_lr(self) -> float:
        return self.lr if self.lr is not None else (0.1 if self.optimizer == "sgd" else 1e-3)

    @property
    def total_epochs(self) -> int:
        """Epochs of the whole run: fine-tuning adds its frozen phase before `epochs`."""
        return self.epochs + (self.freeze_epochs if self.fine_tune else 0)

    @property
    def loggers(self) -> dict[str, str | None]:
        """{'tensorboard': None, 'mlflow': URI or None (MLflow's default)}: where else the run
        is written, from `log` and the `tensorboard` switch."""
        out: dict[str, str | None] = {"tensorboard": None} if self.tensorboard else {}
        for item in self.log:
            name, colon, uri = item.partition(":")
            if name not in LOGGERS:
                close = difflib.get_close_matches(name, LOGGERS, n=1)
                raise ValueError(f"recipe: log: unknown logger {item!r}"
                                 + (f" (did you mean {close[0]!r}?)" if close else "")
                                 + "; loggers: tensorboard, mlflow or mlflow:URI")
            if colon and (name == "tensorboard" or not uri):
                raise ValueError(f"recipe: log: {item!r} takes "
                                 + ("no URI: tensorboard writes into the run directory"
                                    if name == "tensorboard" else
                                    "a URI after the colon (mlflow:http://host:5000), or "
                                    "none: plain mlflow"))
            if name in out and out[name] != (uri or None):
                raise ValueError(f"recipe: log: one {name} destination per run, got "
                                 f"{name}:{out[name]} and {item}")
            out[name] = uri or None
        return out

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
        if "amp" in values:  # recipes (and runs) written before `precision`: amp: true/false
            values = dict(values)
            amp = values.pop("amp")
            if amp is not None:
                values.setdefault("precision", "bf16" if amp else "fp32")
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


def _logger_items(value: Any) -> tuple[str, ...]:
    """The `log` entries as a tuple: a string or a list of them, each possibly a comma-separated
    list (--log tensorboard,mlflow), repeats dropped."""
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) for i in items):
        raise ValueError(f"recipe: log is a list of loggers (tensorboard, mlflow, "
                         f"mlflow:URI), got {value!r}")
    parts = (part.strip() for item in items for part in item.split(","))
    return tuple(dict.fromkeys(part for part in parts if part))


def presets() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def parse_assignments(items: Iterable[str]) -> dict[str, Any]:
    """{key: value} from the command line's `--set KEY=VALUE` items, each value read as YAML
    (3, 0.5, null, [8, 16], {act: tanh}). The keys are recipe fields for `archlab train`
    and dotted protocol keys (recipe.epochs, data.train_fraction) for `archlab compare`."""
    import yaml

    values: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set takes KEY=VALUE (e.g. --set epochs=3), got {item!r}")
        try:
            values[key.strip()] = yaml.safe_load(text)
        except yaml.YAMLError as e:
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise ValueError(f"--set {item!r}: the value is not valid YAML ({problem}); "
                             'e.g. --set "model_kwargs={act: tanh}"') from None
    return values
