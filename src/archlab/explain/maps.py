"""Where a network looks: attribution maps for one image and one class, and attention.

- *saliency* (Simonyan et al., 1312.6034): |d class score / d pixel|, the largest over the
  colour channels: which pixels, changed a little, change the score most;
- *guided backpropagation* (Springenberg et al., 1412.6806): the same gradient, but every
  ReLU passes back only positive gradient, and only where its input was positive (the
  deconvnet's rule and the gradient's together): the speckle of the negative paths is gone
  and edges remain. It differs from the gradient only at ReLUs, so it applies to networks
  that have them;
- *SmoothGrad* (Smilkov et al., 1706.03825): the saliency averaged over copies of the image
  with Gaussian noise (15% of its range), which removes the speckle of raw gradients;
- *Integrated Gradients* (Sundararajan et al., 1703.01365): the gradient integrated along the
  straight path from a black image to this one; the attributions add up to the score's change;
- *Grad-CAM* (Selvaraju et al., 1610.02391): a convolutional stage's maps weighted by the
  average gradient of the class score over each map, summed, rectified, and upsampled: coarse
  but class-discriminative. The default stage is the last one with a spatial map;
- *occlusion* (Zeiler & Fergus, 1311.2901): slide a grey square over the image and record how
  much the class score falls: a map computed from outputs only, no gradient.

For transformers (ViT, DeiT): the class token's *attention* to every patch, per layer and
head, and *attention rollout* (Abnar & Zuidema, 2005.00928): the attention of the layers
multiplied together, each with the identity added for the residual connection and its rows
renormalised, read from the class token's row.

Every method but rollout and attention is captum's (captum.attr); this module chooses the
layer, the baselines and the reductions, and turns the result into one (H, W) map.
"""
from __future__ import annotations

import contextlib
import difflib
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from archlab.analysis.profile import layer_fields
from archlab.explain.images import InputImage
from archlab.explain.subject import ExplainError, Subject

ATTRIBUTION_METHODS = ("saliency", "guided_backprop", "smoothgrad", "integrated_gradients",
                       "gradcam", "occlusion")
ATTENTION_METHODS = ("attention", "rollout")
ALIASES = {"ig": "integrated_gradients", "integrated-gradients": "integrated_gradients",
           "integratedgradients": "integrated_gradients", "grad-cam": "gradcam",
           "grad_cam": "gradcam", "smooth-grad": "smoothgrad", "smooth_grad": "smoothgrad",
           "gradient": "saliency", "attention-rollout": "rollout",
           "attention_rollout": "rollout", "guided-backprop": "guided_backprop",
           "guided_backpropagation": "guided_backprop", "guided": "guided_backprop"}


@dataclass
class Attribution:
    """One map for one image and one class.

    `map` is (H, W) at the input's resolution: non-negative for the gradient methods and
    Grad-CAM, signed for occlusion (positive: hiding the pixels lowers the class score).
    `raw` is what the method computed before reduction: (C, H, W) per-channel attributions,
    Grad-CAM's map at its layer's resolution, the class token's attention (layers, heads,
    rows, columns), or rollout at the patch grid.
    """

    method: str
    image: str
    target: int
    target_name: str
    predicted: int
    predicted_name: str
    prob: float                   # softmax probability of `target`
    map: np.ndarray
    display: np.ndarray           # the image, (H, W, C) in [0, 1]
    layer: str | None = None
    raw: np.ndarray | None = None


def canonical_method(name: str) -> str:
    key = name.strip().lower()
    return ALIASES.get(key, key)


def class_scores(model: nn.Module):
    def forward(x: torch.Tensor) -> torch.Tensor:
        out = model(x)
        return out[0] if isinstance(out, (tuple, list)) else out
    return forward


class ClassScores(nn.Module):
    """The model's class scores as a module: captum's ReLU rules (guided backpropagation,
    the deconvnet) hook the ReLU modules of the nn.Module they are given."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return class_scores(self.model)(x)


def has_relu(model: nn.Module) -> bool:
    """Whether the model has ReLU modules, the only place where guided backpropagation and
    the deconvnet differ from the gradient (captum overrides nn.ReLU's backward)."""
    return any(isinstance(m, nn.ReLU) for m in model.modules())


@contextlib.contextmanager
def quiet_relu_hooks():
    """captum warns at every call that it sets (and removes) hooks on the ReLUs."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
        yield


# --------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------


def get_layer(subject: Subject, name: str) -> nn.Module:
    """The module called `name`, or an error that lists the stages and the closest names."""
    modules = dict(subject.model.named_modules())
    if name in modules and name:
        return modules[name]
    stages = [f["module"] for f in getattr(subject.model, "feature_info", [])]
    close = difflib.get_close_matches(name, [n for n in modules if n], n=5, cutoff=0.6)
    raise ExplainError(
        f"{subject.name} has no layer {name!r}. Its stages: {', '.join(stages) or '-'}"
        + (f"; closest names: {', '.join(close)}" if close else "")
        + f". `archlab info {subject.name} --layers` lists every layer.")


def output_shapes(subject: Subject, names: list[str]) -> dict[str, tuple[int, ...] | None]:
    """The output shape of each named module for one image (one forward pass, cached)."""
    cache = subject.cache.setdefault("shapes", {})
    todo = [n for n in names if n not in cache]
    if todo:
        modules = dict(subject.model.named_modules())
        handles = []
        for n in todo:
            def hook(_m, _i, out, n=n):
                t = out[0] if isinstance(out, (tuple, list)) else out
                cache.setdefault(n, tuple(t.shape) if isinstance(t, torch.Tensor) else None)
            handles.append(modules[n].register_forward_hook(hook))
        x = torch.zeros(1, subject.in_chans, subject.image_size, subject.image_size,
                        device=subject.device)
        try:
            with torch.no_grad():
                subject.model(x)
        finally:
            for h in handles:
                h.remove()
        for n in todo:
            cache.setdefault(n, None)
    return {n: cache[n] for n in names}


def map_layers(subject: Subject) -> list[str]:
    """The feature stages whose output is a spatial map (N, C, H, W) larger than 1x1."""
    stages = [f["module"] for f in getattr(subject.model, "feature_info", [])]
    shapes = output_shapes(subject, stages)
    return [n for n in stages if shapes[n] is not None and len(shapes[n]) == 4
            and shapes[n][-1] * shapes[n][-2] > 1]


def conv_layers(subject: Subject) -> list[str]:
    return [n for n, m in subject.model.named_modules() if isinstance(m, nn.Conv2d)]


def default_cam_layer(subject: Subject) -> str:
    """Grad-CAM's layer: the last feature stage with a spatial map (1610.02391 uses the last
    convolutional layer: the most semantic maps that still say where)."""
    layers = map_layers(subject)
    if not layers:
        convs = conv_layers(subject)
        raise ExplainError(
            f"Grad-CAM needs a convolutional stage, and {subject.name} has none whose output is "
            "a feature map" + (" (a transformer: its stages output tokens)"
                               if subject.has_attention else "")
            + f". Methods that work on it: {', '.join(applicable_methods(subject))}"
            + (f"; or name a convolution (layer=, --layer): {', '.join(convs[:8])}"
               if convs else ""))
    return layers[-1]


def applicable_methods(subject: Subject) -> list[str]:
    out = ["saliency", *(["guided_backprop"] if has_relu(subject.model) else []),
           "smoothgrad", "integrated_gradients"]
    if map_layers(subject):
        out.append("gradcam")
    out.append("occlusion")
    if subject.has_attention:
        out += list(ATTENTION_METHODS)
    return out


# --------------------------------------------------------------------------------------
# Attribution
# --------------------------------------------------------------------------------------


def _black(subject: Subject, x: torch.Tensor) -> torch.Tensor:
    """The normalised value of a black image."""
    return subject.normalise(torch.zeros_like(x))


def occlusion_window(image_size: int) -> tuple[int, int]:
    """(side, stride) of the occluding square: a seventh of the image, half-overlapping."""
    side = max(4, round(image_size / 7))
    return side, max(1, side // 2)


def attribute(subject: Subject, image: InputImage, method: str = "saliency",
              target: int | str | None = None, layer: str | None = None,
              **options: Any) -> Attribution:
    """One attribution map of `image` for class `target` (default: the predicted class).

    Options: smoothgrad `samples` (25) and `noise` (0.15 of the input's range);
    integrated_gradients `steps` (50); occlusion `window` and `stride` (pixels; default a
    seventh of the image, half-overlapping); rollout `head_fusion` ('mean', 'max', 'min');
    gradcam `layer` (default: `default_cam_layer`) and `align`: 'field' places each unit
    of the layer's map at the centre of its receptive field before interpolating (exact for
    valid-padded networks such as LeNet), 'resize' stretches the map over the image as
    pytorch-grad-cam does; `batch`: inputs per forward pass (IG, occlusion).
    """
    method = canonical_method(method)
    known = ATTRIBUTION_METHODS + ATTENTION_METHODS
    if method not in known:
        raise ExplainError(f"unknown method {method!r}; choose one of {', '.join(known)} "
                           f"(those for {subject.name}: "
                           f"{', '.join(applicable_methods(subject))})")
    model, x = subject.model, image.tensor
    with torch.no_grad():
        logits = class_scores(model)(x).float()
    probs = logits.softmax(1)[0]
    predicted = int(probs.argmax())
    t = predicted if target is None else subject.class_index(target)
    forward = class_scores(model)
    used_layer = None
    x = x.detach().clone().requires_grad_(True)
    hw = tuple(x.shape[-2:])
    if method in ATTENTION_METHODS:
        raw, result = _attention(subject, image, method, options, hw)
    elif method == "gradcam":
        used_layer = layer or default_cam_layer(subject)
        raw, result = _gradcam(subject, forward, x, t, used_layer, options, hw)
    elif method == "occlusion":
        raw, result = _occlusion(subject, forward, x, t, options)
    else:
        raw, result = _gradients(subject, image, method, forward, x, t, options)
    return Attribution(method, image.name, t, subject.class_name(t), predicted,
                       subject.class_name(predicted), float(probs[t]),
                       result.detach().float().cpu().numpy(), image.display, used_layer, raw)


def _attention(subject: Subject, image: InputImage, method: str, options: dict[str, Any],
               hw: tuple[int, int]) -> tuple[np.ndarray, torch.Tensor]:
    """The class token's attention (the last layer's, heads averaged) or rollout."""
    what = "attention maps" if method == "attention" else "attention rollout"
    full = maps_full(subject, image.tensor, what)
    prefix, grid = subject.model.num_prefix_tokens, _grid(subject, image.tensor)
    pooled = _reads_pooled_patches(subject.model)
    if method == "attention":
        raw = class_attention(full, prefix, grid, pooled)
        cells = raw[-1].mean(0)                  # the last layer, heads averaged
    else:
        raw = cells = attention_rollout(full, prefix, grid,
                                        options.get("head_fusion", "mean"), pooled)
    return raw, _upsample(torch.as_tensor(cells), hw)


def _gradients(subject: Subject, image: InputImage, method: str, forward, x: torch.Tensor,
               t: int, options: dict[str, Any]) -> tuple[np.ndarray, torch.Tensor]:
    """Saliency, guided backpropagation, SmoothGrad or Integrated Gradients: (per-channel
    map, (H, W) map; the largest magnitude over the channels but for IG's sum)."""
    from captum import attr as ca

    if method == "saliency":
        a = ca.Saliency(forward).attribute(x, target=t, abs=True)
        return a[0].detach().cpu().numpy(), a[0].amax(0)
    if method == "guided_backprop":
        with quiet_relu_hooks():
            a = ca.GuidedBackprop(ClassScores(subject.model)).attribute(x, target=t)
        return a[0].detach().cpu().numpy(), a[0].abs().amax(0)
    if method == "smoothgrad":
        spread = float(image.tensor.max() - image.tensor.min())
        noise = float(options.get("noise", 0.15)) * spread
        samples = int(options.get("samples", 25))
        a = ca.NoiseTunnel(ca.Saliency(forward)).attribute(
            x, nt_type="smoothgrad", nt_samples=samples, nt_samples_batch_size=samples,
            stdevs=noise, target=t)
        return a[0].detach().cpu().numpy(), a[0].amax(0)
    a = ca.IntegratedGradients(forward).attribute(
        x, baselines=_black(subject, x), target=t, n_steps=int(options.get("steps", 50)),
        internal_batch_size=int(options.get("batch", 25)))
    return a[0].detach().cpu().numpy(), a[0].sum(0).abs()


def _gradcam(subject: Subject, forward, x: torch.Tensor, t: int, layer: str,
             options: dict[str, Any], hw: tuple[int, int]) -> tuple[np.ndarray, torch.Tensor]:
    """Grad-CAM at `layer`: (the map at the layer's resolution, the map over the image)."""
    from captum import attr as ca

    module = get_layer(subject, layer)
    shape = output_shapes(subject, [layer])[layer]
    if shape is None or len(shape) != 4:
        raise ExplainError(
            f"Grad-CAM needs a layer whose output is a feature map (N, C, H, W); "
            f"{layer!r} outputs {shape or 'no tensor'}. Layers that work: "
            f"{', '.join(map_layers(subject)) or ', '.join(conv_layers(subject)[-5:])}")
    cam = ca.LayerGradCam(forward, module).attribute(x, target=t, relu_attributions=True)
    raw = cam[0, 0].detach().cpu().numpy()
    if options.get("align", "field") == "field":
        return raw, _upsample_to_field(cam[0, 0], _field(subject, layer), hw)
    return raw, _upsample(cam[0, 0], hw)


def _occlusion(subject: Subject, forward, x: torch.Tensor, t: int,
               options: dict[str, Any]) -> tuple[np.ndarray, torch.Tensor]:
    """The score change under a sliding grey square, averaged over the channels."""
    from captum import attr as ca

    side, stride = occlusion_window(subject.image_size)
    side, stride = int(options.get("window", side)), int(options.get("stride", stride))
    c = x.shape[1]
    a = ca.Occlusion(forward).attribute(
        x.detach(), sliding_window_shapes=(c, side, side), strides=(c, stride, stride),
        baselines=0.0, target=t, perturbations_per_eval=int(options.get("batch", 32)))
    return a[0].detach().cpu().numpy(), a[0].mean(0)


def _upsample(grid: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(grid[None, None].float(), size=hw, mode="bilinear",
                         align_corners=False)[0, 0]


def _field(subject: Subject, layer: str):
    cache = subject.cache.setdefault("fields", {})
    if layer not in cache:
        cache[layer] = layer_fields(subject.model, subject.image_size, [layer])[layer]
    return cache[layer]


def _upsample_to_field(grid: torch.Tensor, field, hw: tuple[int, int]) -> torch.Tensor:
    """Interpolate a layer's map onto the input's pixels, each unit placed at the centre of
    its receptive field (unit i at start + i * jump), the border units held beyond."""
    if field is None or field.is_global:
        return _upsample(grid, hw)
    coords = []
    for axis in (0, 1):
        n = grid.shape[axis]
        unit = (torch.arange(hw[axis], dtype=torch.float32) + 0.5 - field.start[axis]
                ) / field.jump[axis]
        coords.append(unit * 2 / (n - 1) - 1 if n > 1 else torch.zeros(hw[axis]))
    gy, gx = torch.meshgrid(coords[0], coords[1], indexing="ij")
    where = torch.stack([gx, gy], -1)[None].to(grid.device)
    return F.grid_sample(grid[None, None].float(), where, mode="bilinear",
                         padding_mode="border", align_corners=True)[0, 0]


# --------------------------------------------------------------------------------------
# Attention
# --------------------------------------------------------------------------------------


def _grid(subject: Subject, x: torch.Tensor) -> tuple[int, int]:
    p = subject.model.patch_size
    return x.shape[-2] // p, x.shape[-1] // p


def maps_full(subject: Subject, x: torch.Tensor, method: str = "attention maps"
              ) -> list[torch.Tensor]:
    """Every layer's attention probabilities for one image: (heads, tokens, tokens) each."""
    if not subject.has_attention:
        raise ExplainError(
            f"{subject.name} has no attention layers, so it has no {method} (a method for "
            "transformers: ViT, DeiT). Methods that work on it: "
            f"{', '.join(applicable_methods(subject))}")
    with torch.no_grad():
        return [a[0].float().cpu() for a in subject.model.forward_attention(x)]


def _reads_pooled_patches(model) -> bool:
    """Whether the classifier reads the mean of the patch tokens (global_pool='avg') rather
    than the class token."""
    return getattr(model, "global_pool", "token") == "avg"


def _readout(rows: torch.Tensor, num_prefix_tokens: int, pooled: bool) -> torch.Tensor:
    """The attention row(s) the classifier reads, (..., tokens, tokens) -> (..., tokens): the
    class token's row, or, when the head averages the patch tokens, the mean of their rows
    (the attention that the pooled vector receives)."""
    return rows[..., num_prefix_tokens:, :].mean(-2) if pooled else rows[..., 0, :]


def class_attention(maps: list[torch.Tensor], num_prefix_tokens: int,
                    grid: tuple[int, int], pooled: bool = False) -> np.ndarray:
    """The class token's attention to every patch (with `pooled`, that of the averaged
    patch tokens): (layers, heads, rows, columns)."""
    return torch.stack([_readout(a, num_prefix_tokens, pooled)[:, num_prefix_tokens:]
                        .reshape(-1, *grid) for a in maps]).numpy()


def attention_maps(subject: Subject, x: torch.Tensor) -> np.ndarray:
    """`class_attention` of one normalised image (1, C, H, W)."""
    return class_attention(maps_full(subject, x), subject.model.num_prefix_tokens,
                           _grid(subject, x), _reads_pooled_patches(subject.model))


def attention_rollout(maps: list[torch.Tensor], num_prefix_tokens: int,
                      grid: tuple[int, int], head_fusion: str = "mean",
                      pooled: bool = False) -> np.ndarray:
    """Attention rollout (2005.00928): fuse the heads of each layer, add the identity for the
    residual connection and renormalise the rows, multiply the layers (the last on the
    left), and read the class token's row at the patches (with `pooled`, the mean of the
    patch tokens' rows), as a (rows, columns) grid."""
    fuse = {"mean": lambda a: a.mean(0), "max": lambda a: a.amax(0),
            "min": lambda a: a.amin(0)}
    if head_fusion not in fuse:
        raise ExplainError(f"head_fusion must be one of {', '.join(fuse)}, got {head_fusion!r}")
    tokens = maps[0].shape[-1]
    rollout = torch.eye(tokens, dtype=torch.float64)
    for a in maps:
        a = fuse[head_fusion](a.double()) + torch.eye(tokens, dtype=torch.float64)
        a = a / a.sum(-1, keepdim=True)
        rollout = a @ rollout
    read = _readout(rollout, num_prefix_tokens, pooled)
    return read[num_prefix_tokens:].reshape(grid).float().numpy()
