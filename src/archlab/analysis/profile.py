"""What a network costs and what it sees: parameters, MACs, activation memory, receptive field.

`profile(model_or_name, img_size)` runs one forward pass, on the meta device by default (no
memory, no arithmetic: a ViT-L costs nothing to profile) and gathers:

- parameters (total and trainable) and multiply-accumulates, counted by
  `torch.utils.flop_counter` (which counts 2 FLOPs per MAC), never by hand;
- the bytes of every layer's output for a batch (the activations a backward pass keeps);
- per layer: output shape, parameters, MACs, and the receptive field and cumulative stride of
  its output, tracked through every convolution and pooling by a TorchFunctionMode.

The receptive field is the theoretical one of the convolution and pooling path (1603.07285):
r_out = r_in + (k - 1)·d·j_in, j_out = j_in·s. Gates computed from a global pool (squeeze-
excitation) multiply a map without widening it here; a tensor that leaves the (N, C, H, W)
layout (tokens, pooled vectors) sees the whole image.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

from archlab._io import write_atomic
from archlab.models import create_model, model_builder, model_config

# --------------------------------------------------------------------------------------
# Receptive field tracking
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    """Receptive field of one unit of a feature map, per axis (height, width): its size in
    input pixels, the distance in input pixels between neighbouring units (the cumulative
    stride, 'jump'), and the centre of the first unit in input coordinates."""

    size: tuple[float, float] = (1.0, 1.0)
    jump: tuple[float, float] = (1.0, 1.0)
    start: tuple[float, float] = (0.5, 0.5)
    is_global: bool = False

    def window(self, kernel, stride, padding, dilation=(1, 1)) -> "Field":
        size = tuple(r + (k - 1) * d * j for r, k, d, j in
                     zip(self.size, kernel, dilation, self.jump))
        start = tuple(s + ((k - 1) * d / 2 - p) * j for s, k, d, p, j in
                      zip(self.start, kernel, dilation, padding, self.jump))
        jump = tuple(j * s for j, s in zip(self.jump, stride))
        return Field(size, jump, start, self.is_global)


def _pair(v: Any) -> tuple:
    if isinstance(v, (list, tuple)):
        return tuple(v) if len(v) == 2 else (v[0], v[0])
    return (v, v)


_CONV = {"conv2d"}
_POOL = {"max_pool2d", "_max_pool2d", "max_pool2d_with_indices", "avg_pool2d", "lp_pool2d"}
_ADAPTIVE = {"adaptive_avg_pool2d", "adaptive_max_pool2d", "_adaptive_max_pool2d",
             "adaptive_max_pool2d_with_indices"}


class _FieldTracker(TorchFunctionMode):
    """Attach a Field to every 4-D tensor computed from the tracked input."""

    def __init__(self, image_hw: tuple[int, int]) -> None:
        super().__init__()
        self.global_field = Field(tuple(float(s) for s in image_hw), (1.0, 1.0),
                                  tuple(s / 2 for s in image_hw), True)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        flat, _ = tree_flatten((args, kwargs))
        fields = [(t, t._archlab_field) for t in flat
                  if isinstance(t, torch.Tensor) and hasattr(t, "_archlab_field")]
        if not fields:
            return out
        name = getattr(func, "__name__", "")
        first, field_in = fields[0]
        if name in _CONV or name in _POOL or name in _ADAPTIVE or name == "pad":
            new = self._spatial(name, first, field_in, args, kwargs, out)
        else:
            # Elementwise and channel ops: the widest field of the inputs that are maps.
            # Broadcast gates (H = W = 1, from a global pool) do not widen the field.
            maps = [f for t, f in fields if t.ndim == 4 and t.shape[-2:].numel() > 1]
            candidates = maps or [f for _, f in fields]
            new = max(candidates, key=lambda f: (f.is_global, f.size))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                # Leaving the map layout (tokens, vectors) means every pixel can matter.
                t._archlab_field = (new if t.ndim == 4 and not new.is_global
                                    else self.global_field if t.ndim != 4 else new)
        return out

    def _spatial(self, name, x, f: Field, args, kwargs, out) -> Field:
        def arg(i, key, default):
            return args[i] if len(args) > i else kwargs.get(key, default)

        if name == "pad":
            pad = list(arg(1, "pad", [0, 0, 0, 0])) + [0, 0, 0, 0]
            # F.pad lists (left, right, top, bottom); padding shifts where unit 0 sits.
            return Field(f.size, f.jump, (f.start[0] - pad[2] * f.jump[0],
                                          f.start[1] - pad[0] * f.jump[1]), f.is_global)
        if name in _CONV:
            weight = arg(1, "weight", None)
            stride, padding, dilation = (_pair(arg(3, "stride", 1)), arg(4, "padding", 0),
                                         _pair(arg(5, "dilation", 1)))
            kernel = tuple(weight.shape[-2:])
            if isinstance(padding, str):
                padding = (0, 0) if padding == "valid" else tuple(
                    (k - 1) * d // 2 for k, d in zip(kernel, dilation))
            return f.window(kernel, stride, _pair(padding), dilation)
        if name in _POOL:
            kernel = _pair(arg(1, "kernel_size", 1))
            stride = arg(2, "stride", None)
            stride = _pair(stride) if stride not in (None, [], ()) else kernel
            padding = _pair(arg(3, "padding", 0))
            dilation = _pair(arg(4, "dilation", 1)) if "max" in name else (1, 1)
            return f.window(kernel, stride, padding, dilation)
        # Adaptive pooling: a global pool sees everything; otherwise bins of in/out pixels.
        result = out[0] if isinstance(out, tuple) else out
        in_hw, out_hw = x.shape[-2:], result.shape[-2:]
        if tuple(out_hw) == (1, 1):
            return self.global_field
        kernel = tuple(math.ceil(i / o) for i, o in zip(in_hw, out_hw))
        stride = tuple(max(1, i // o) for i, o in zip(in_hw, out_hw))
        return f.window(kernel, stride, (0, 0))


def field_of(t: torch.Tensor) -> Field | None:
    return getattr(t, "_archlab_field", None)


def layer_fields(model: nn.Module, img_size: int | tuple[int, int],
                 names: list[str]) -> dict[str, Field | None]:
    """The Field of the output of each named module for one `img_size` input (one forward
    pass in eval mode, on the model's device); None where the output is no (N, C, H, W) map.
    """
    modules = dict(model.named_modules())
    missing = [n for n in names if n not in modules]
    if missing:
        raise KeyError(f"no module named {', '.join(map(repr, missing))}")
    hw = _pair(img_size)
    found: dict[str, Field | None] = {}

    def hook(name: str):
        def fn(_module, _inputs, output):
            t = _first_tensor(output)
            if name not in found and t is not None:
                found[name] = field_of(t) if t.ndim == 4 else None
        return fn

    handles = [modules[n].register_forward_hook(hook(n)) for n in names]
    param = next(iter(model.parameters()), None)
    x = torch.zeros(1, getattr(model, "in_chans", 3), *hw,
                    device=param.device if param is not None else "cpu")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), _FieldTracker(hw):
            x._archlab_field = Field()
            model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return {n: found.get(n) for n in names}


# --------------------------------------------------------------------------------------
# The profile
# --------------------------------------------------------------------------------------


@dataclass
class LayerRow:
    name: str
    type: str
    output_shape: tuple[int, ...]
    params: int
    macs: int
    receptive_field: tuple[float, float] | None
    stride: tuple[float, float] | None


@dataclass
class Profile:
    model: str
    input_size: tuple[int, int, int]
    batch_size: int
    params: int
    trainable_params: int
    macs: int
    activation_bytes: int
    output_shape: tuple[int, ...]
    feature_shape: tuple[int, ...]
    receptive_field: tuple[float, float] | None      # of the last feature map
    feature_stride: tuple[float, float] | None
    layers: list[LayerRow] = field(default_factory=list)

    @property
    def flops(self) -> int:
        return 2 * self.macs

    def as_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "layers"}
        d["flops"] = self.flops
        d["layers"] = [vars(r) for r in self.layers]
        return d


def _first_tensor(out: Any) -> torch.Tensor | None:
    for t in tree_flatten(out)[0]:
        if isinstance(t, torch.Tensor):
            return t
    return None


class _LayerRecorder:
    """Forward hooks that give every module its output shape, parameters, MACs (the flop
    counter's total before and after it) and receptive field, and add up the activations
    of the leaves (what a forward pass holds for the backward one)."""

    def __init__(self, model: nn.Module, counter: FlopCounterMode,
                 table_depth: int | None) -> None:
        self.counter, self.table_depth = counter, table_depth
        self.rows: dict[str, LayerRow] = {}
        self.order: list[str] = []
        self.act_bytes = 0
        self._started: dict[str, list[int]] = {}
        self.handles = [h for n, m in model.named_modules() if n
                        for h in (m.register_forward_pre_hook(self._pre_hook(n)),
                                  m.register_forward_hook(self._hook(n)))]

    def _wanted(self, module_name: str, module: nn.Module) -> bool:
        if self.table_depth is None:
            return not any(True for _ in module.children())
        return module_name.count(".") + 1 == self.table_depth

    def _pre_hook(self, module_name: str):
        def fn(module, _inputs):
            self._started.setdefault(module_name, []).append(self.counter.get_total_flops())
        return fn

    def _hook(self, module_name: str):
        def fn(module, _inputs, output):
            flops = self.counter.get_total_flops() - self._started[module_name].pop()
            t = _first_tensor(output)
            if t is None:
                return
            if not any(True for _ in module.children()):
                self.act_bytes += t.numel() * t.element_size()
            if not self._wanted(module_name, module) or module_name in self.rows:
                return
            f = field_of(t) if t.ndim == 4 else None
            self.rows[module_name] = LayerRow(
                module_name, type(module).__name__, tuple(t.shape),
                sum(p.numel() for p in module.parameters()), flops // 2,
                f.size if f else None, f.jump if f else None)
            self.order.append(module_name)
        return fn

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def profile(model: nn.Module | str, img_size: int | tuple[int, int] | None = None,
            in_chans: int | None = None, batch_size: int = 1, device: str = "meta",
            table_depth: int | None = None, model_kwargs: dict[str, Any] | None = None,
            **create_kwargs: Any) -> Profile:
    """Profile a model (or a registered name, built on `device`) at `img_size`.

    `table_depth` picks the rows of the per-layer table: None for the leaves (every conv,
    norm, activation...), 1 for the top-level children, 2 for their children, and so on.
    Other keywords go to `create_model` (a model's own `depth`, `width`...), as do those of
    `model_kwargs`, a run's recorded keywords, which may hold the model's own `img_size`
    (the grid a ViT stores its position embeddings for), not the profiled input's.
    """
    if isinstance(model, str):
        with torch.device(device):
            model = create_model(model, **({"in_chans": in_chans} if in_chans else {}),
                                 **{**(model_kwargs or {}), **create_kwargs})
    name = getattr(model, "model_name", type(model).__name__)
    card = getattr(model, "card", None)
    if img_size is None:
        img_size = card.input_size[1:] if card else (224, 224)
    hw = _pair(img_size)
    in_chans = getattr(model, "in_chans", in_chans or 3)
    device = next(iter(model.parameters())).device
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    recorder = _LayerRecorder(model, counter, table_depth)
    x = torch.zeros(batch_size, in_chans, *hw, device=device)
    try:
        with torch.no_grad(), counter, _FieldTracker(hw) as tracker:
            x._archlab_field = Field()
            features = model.forward_features(x) if hasattr(model, "forward_features") else None
            if features is not None:
                out = model.forward_head(features) if hasattr(model, "forward_head") else None
            else:
                out = model(x)
            del tracker
    finally:
        recorder.remove()
        model.train(was_training)

    feat = _first_tensor(features) if features is not None else None
    # Tokens or vectors: every unit sees the whole image and there is no grid stride.
    f = field_of(feat) if feat is not None and feat.ndim == 4 else None
    out_t = _first_tensor(out)
    params = sum(p.numel() for p in model.parameters())
    return Profile(
        model=name, input_size=(in_chans, *hw), batch_size=batch_size, params=params,
        trainable_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
        macs=int(counter.get_total_flops() // 2), activation_bytes=recorder.act_bytes,
        output_shape=tuple(out_t.shape) if out_t is not None else (),
        feature_shape=tuple(feat.shape) if feat is not None else (),
        receptive_field=f.size if f else tuple(float(v) for v in hw),
        feature_stride=f.jump if f else None,
        layers=[recorder.rows[n] for n in recorder.order])


# --------------------------------------------------------------------------------------
# The cost of every registered model, cached
# --------------------------------------------------------------------------------------


def costs_of(model: nn.Module, input_size: tuple[int, ...]) -> tuple[int, int]:
    """(parameters, MACs of one image of `input_size` (channels, height, width)) of a model,
    in evaluation mode on its own device (the meta device costs no memory): the two numbers
    of `profile` without its per-layer table and receptive fields, several times faster."""
    was_training = model.training
    model.eval()
    x = torch.empty(1, *input_size, device=next(iter(model.parameters())).device)
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return sum(p.numel() for p in model.parameters()), int(counter.get_total_flops() // 2)


def _cost_cache_path() -> Path:
    root = os.environ.get("ARCHLAB_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "archlab")
    return Path(root) / "model_costs.json"


def _family_fingerprint(name: str) -> str:
    """Changes whenever the family's source or the registered configuration changes."""
    source = inspect.getsource(inspect.getmodule(model_builder(name)))
    return hashlib.sha256((source + repr(sorted(model_config(name).items(), key=str))
                           + torch.__version__).encode()).hexdigest()[:16]


def model_costs(name: str, use_cache: bool = True) -> tuple[int, int]:
    """(parameters, MACs at the card's resolution) of a registered model, 1000 classes.

    Counting the giants on the meta device still costs seconds each, so results are kept in
    ~/.cache/archlab/model_costs.json (or $ARCHLAB_CACHE), keyed by a fingerprint of the
    family's source: editing a family recounts it.
    """
    path = _cost_cache_path()
    key = f"{name}:{_family_fingerprint(name)}"
    cache: dict = {}
    if use_cache and path.exists():
        try:
            cache = json.loads(path.read_text())
        except (OSError, ValueError):
            cache = {}  # a damaged cache is only a cache: recount
    if key in cache:
        return tuple(cache[key])
    with torch.device("meta"):
        model = create_model(name)
    result = costs_of(model, model.card.input_size)
    if use_cache:
        cache[key] = result
        try:
            write_atomic(path, json.dumps(cache))
        except OSError:
            pass  # a read-only home still gets its answer
    return result
