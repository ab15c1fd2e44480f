"""Weights in, weights out: peers' state dicts into archlab models, read without unpickling.

A state dict from torchvision, timm or efficientnet-pytorch is renamed by the key map its
family declares (`ImageClassifier.checkpoint_key_maps` / `convert_checkpoint`), adapted to
the model (a classifier of another size is left freshly initialised; a first convolution
trained on RGB is folded onto 1 or N input channels) and loaded strictly: anything missing,
unexpected or mis-shaped is named.

Nothing here unpickles code: safetensors files are plain tensors, and other files go
through `torch.load(weights_only=True)`.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from archlab._io import write_atomically
from archlab.models.layers import ImageClassifier

# pretrainedmodels is Cadene's pretrained-models.pytorch, the port of BN-Inception's weights.
SOURCES = ("archlab", "torchvision", "timm", "efficientnet-pytorch", "pretrainedmodels")
PEER_SOURCES = SOURCES[1:]
_SOURCE_ALIASES = {"tv": "torchvision", "efficientnet_pytorch": "efficientnet-pytorch",
                   "effnet": "efficientnet-pytorch"}


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model."""


@dataclass
class LoadReport:
    source: str
    loaded: int = 0
    reset: list[str] = field(default_factory=list)      # classifier weights left at init
    adapted: list[str] = field(default_factory=list)    # input convs folded to in_chans
    metadata: dict[str, str] = field(default_factory=dict)  # the file's (safetensors)

    def __str__(self) -> str:
        parts = [f"loaded {self.loaded} tensors from a {self.source} checkpoint"]
        if self.reset:
            parts.append(f"classifier reset ({', '.join(self.reset)})")
        if self.adapted:
            parts.append(f"input convolution adapted ({', '.join(self.adapted)})")
        return "; ".join(parts)


# --------------------------------------------------------------------------------------
# Reading and writing files
# --------------------------------------------------------------------------------------


def read_state_dict(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a checkpoint's tensors (and safetensors metadata) without unpickling code."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist; give the path of a "
                                ".safetensors, .pt or .pth file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes); it was probably cut off "
                              "while being written or downloaded: write or download it again")
    with open(path, "rb") as f:
        head = f.read(16)
    if path.suffix == ".safetensors" or _looks_like_safetensors(head):
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata() or {}
                return {k: f.get_tensor(k) for k in f.keys()}, metadata
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"checkpoint {path} is not a readable safetensors file "
                                  f"({e}); it may be truncated: write or download it again"
                                  ) from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated or foreign files
        raise CheckpointError(
            f"checkpoint {path} could not be read as tensors ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}). It may be truncated, or a pickle "
            "with code in it, which archlab never loads: re-save it with "
            "torch.save(model.state_dict(), path) or as safetensors") from None
    return _unwrap(obj, path), {}


def _looks_like_safetensors(head: bytes) -> bool:
    # 8-byte little-endian header length, then a JSON object.
    return len(head) > 9 and head[8:9] == b"{"


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """Accept a bare state dict or the usual training-checkpoint wrappers."""
    for key in ("state_dict_ema", "model_ema", "state_dict", "model", "module"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise CheckpointError(f"checkpoint {path} holds no state dict (a mapping of names to "
                              "tensors); it is not a model checkpoint archlab can load")
    # DataParallel / DistributedDataParallel prefix every key with 'module.'.
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def save_state_dict(state_dict: dict[str, torch.Tensor], path: str | os.PathLike,
                    metadata: dict[str, str] | None = None) -> Path:
    """Write safetensors atomically (`write_atomically`)."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
    return write_atomically(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


# --------------------------------------------------------------------------------------
# Converting
# --------------------------------------------------------------------------------------


def normalize_source(source: str | None) -> str | None:
    if source is None:
        return None
    source = _SOURCE_ALIASES.get(source.lower(), source.lower())
    if source not in SOURCES:
        raise ValueError(f"unknown checkpoint source {source!r}; choose one of "
                         f"{', '.join(SOURCES)}")
    return source


def _rename(model: ImageClassifier, state_dict: dict[str, torch.Tensor], source: str
            ) -> dict[str, torch.Tensor]:
    if source == "archlab":
        # A family may adapt its own layout too (ViT resizes position embeddings); one whose
        # convert_checkpoint knows only the peers' layouts gets the dict unchanged.
        try:
            return model.convert_checkpoint(state_dict, source)
        except KeyError:
            return dict(state_dict)
    try:
        return model.convert_checkpoint(state_dict, source)
    except KeyError:
        raise CheckpointError(
            f"{getattr(model, 'model_name', type(model).__name__)} has no key map for "
            f"{source} checkpoints; it reads "
            f"{', '.join(['archlab', *model.checkpoint_key_maps]) }") from None


def _match_score(model_sd: dict[str, torch.Tensor], converted: dict[str, torch.Tensor]) -> int:
    return sum(1 for k, v in converted.items() if k in model_sd and model_sd[k].shape == v.shape)


def detect_source(model: ImageClassifier, state_dict: dict[str, torch.Tensor]) -> str:
    """Which layout a state dict is in: the one whose key map fits the model best."""
    if any(k.startswith(("_conv_stem.", "_blocks.")) for k in state_dict):
        return "efficientnet-pytorch"
    model_sd = model.state_dict()
    best, best_score = "archlab", -1
    for source in ("archlab", *model.checkpoint_key_maps):
        try:
            converted = _rename(model, state_dict, source)
        except (CheckpointError, KeyError, RuntimeError, ValueError):
            continue
        score = _match_score(model_sd, converted)
        if score > best_score:
            best, best_score = source, score
    return best


def _adapt_input_conv(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Fold RGB-trained filters onto `in_chans` inputs, keeping the response to a grey image:
    sum the three for one channel; repeat and scale by 3/N for N channels."""
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    repeat = math.ceil(in_chans / weight.shape[1])
    return weight.repeat(1, repeat, 1, 1)[:, :in_chans] * (weight.shape[1] / in_chans)


def convert_state_dict(model: ImageClassifier, state_dict: dict[str, torch.Tensor],
                       source: str | None = None) -> tuple[dict[str, torch.Tensor], LoadReport]:
    """Rename and adapt a state dict to `model`; fail with the first mismatches named."""
    source = normalize_source(source) or detect_source(model, state_dict)
    converted = _rename(model, state_dict, source)
    report = LoadReport(source)
    model_sd = model.state_dict()
    classifier_keys = {n for n, _ in _prefixed(model)}
    for key in list(converted):
        if key not in model_sd:
            continue
        want, have = model_sd[key].shape, converted[key].shape
        if want == have:
            continue
        if key in classifier_keys:
            del converted[key]                       # another number of classes: re-learn it
            report.reset.append(key)
        elif (len(want) == 4 and len(have) == 4 and want[0] == have[0]
              and want[2:] == have[2:] and getattr(model, "in_chans", None) == want[1]):
            converted[key] = _adapt_input_conv(converted[key], want[1])
            report.adapted.append(key)
    # Checkpoints saved before PyTorch 0.4.1 have no batch-norm step counters; PyTorch fills
    # them in on loading, so they are not missing.
    missing = [k for k in model_sd if k not in converted and k not in report.reset
               and not k.endswith(".num_batches_tracked")]
    unexpected = [k for k in converted if k not in model_sd]
    mismatched = [f"{k}: checkpoint {tuple(converted[k].shape)} vs model "
                  f"{tuple(model_sd[k].shape)}" for k in converted
                  if k in model_sd and converted[k].shape != model_sd[k].shape]
    if missing or unexpected or mismatched:
        name = getattr(model, "model_name", type(model).__name__)
        lines = [f"the {source} checkpoint does not fit {name}:"]
        if missing:
            lines.append(f"  {len(missing)} missing, first: {', '.join(missing[:5])}")
        if unexpected:
            lines.append(f"  {len(unexpected)} unexpected, first: {', '.join(unexpected[:5])}")
        if mismatched:
            lines.append(f"  {len(mismatched)} of another shape, first: "
                         f"{'; '.join(mismatched[:3])}")
        lines.append("  Check the model name and variant, or pass the source explicitly.")
        raise CheckpointError("\n".join(lines))
    report.loaded = len(converted)
    return converted, report


def _prefixed(model: ImageClassifier):
    try:
        classifier = model.get_classifier()
    except (AttributeError, NotImplementedError):
        return []
    heads = classifier if isinstance(classifier, (list, tuple)) else [classifier]
    ids = {id(m) for h in heads for m in h.modules()}
    return [(f"{mod_name}.{p}" if mod_name else p, t)
            for mod_name, module in model.named_modules() if id(module) in ids
            for p, t in module.named_parameters(recurse=False)]


def load_state_dict(model: ImageClassifier, state_dict: dict[str, torch.Tensor],
                    source: str | None = None) -> LoadReport:
    converted, report = convert_state_dict(model, state_dict, source)
    model.load_state_dict(converted, strict=not report.reset)
    return report


def load_checkpoint(model: ImageClassifier, path: str | os.PathLike,
                    source: str | None = None) -> LoadReport:
    state_dict, metadata = read_state_dict(path)
    report = load_state_dict(model, state_dict, source or metadata.get("source_layout"))
    report.metadata = metadata
    return report


# --------------------------------------------------------------------------------------
# Named weights from the peers' hubs (needs the internet; these machines have none)
# --------------------------------------------------------------------------------------


def _offline_error(spec: str, error: Exception) -> RuntimeError:
    return RuntimeError(
        f"could not download pretrained weights {spec!r} ({type(error).__name__}: {error}). "
        "This machine looks offline: download the checkpoint where there is internet and "
        "pass its path, e.g. create_model(name, pretrained='weights.pth').")


def fetch_named_state_dict(model: ImageClassifier, spec: str
                           ) -> tuple[dict[str, torch.Tensor], str]:
    """Download named weights with the peer's own code: 'tv:IMAGENET1K_V2',
    'timm:augreg_in21k_ft_in1k' (or 'timm:' for timm's default), 'efficientnet-pytorch:',
    'pretrainedmodels:' (its 'imagenet')."""
    prefix, _, tag = spec.partition(":")
    source = normalize_source(prefix)
    model_name = model.model_name
    peers = model.card.peers
    if source not in peers:
        raise ValueError(f"{model_name} has no {source} counterpart to take weights from; "
                         f"it has: {', '.join(peers) or 'none'}")
    peer_name = peers[source]
    try:
        if source == "torchvision":
            import torchvision

            weights = torchvision.models.get_model_weights(peer_name)
            chosen = weights[tag] if tag else weights.DEFAULT
            return chosen.get_state_dict(progress=True), source
        if source == "timm":
            try:
                import timm
            except ImportError:
                raise RuntimeError("timm weights need timm: pip install timm") from None
            peer = timm.create_model(f"{peer_name}.{tag}" if tag else peer_name,
                                     pretrained=True)
            return peer.state_dict(), source
        if source == "efficientnet-pytorch":
            try:
                from efficientnet_pytorch import EfficientNet
            except ImportError:
                raise RuntimeError("these weights need efficientnet-pytorch: "
                                   "pip install efficientnet-pytorch") from None
            return EfficientNet.from_pretrained(peer_name).state_dict(), source
        if source == "pretrainedmodels":
            try:
                import pretrainedmodels
            except ImportError:
                raise RuntimeError("these weights need pretrainedmodels: "
                                   "pip install pretrainedmodels") from None
            tag = tag or "imagenet"
            peer = pretrainedmodels.__dict__[peer_name](num_classes=1000, pretrained=tag)
            state = peer.state_dict()
            if pretrainedmodels.pretrained_settings[peer_name][tag]["input_space"] == "BGR":
                # The Caffe ports read BGR; archlab feeds RGB, so the first convolution
                # reads its input channels in the other order (pretrained_cfg's statistics
                # are turned round to match, models/pretrained_cfg.py).
                first = next(k for k, v in state.items() if v.ndim == 4)
                state[first] = state[first].flip(1)
            return state, source
    except (OSError, ConnectionError) as e:  # URLError is an OSError
        raise _offline_error(spec, e) from None
    raise ValueError(f"unknown weights source in {spec!r}")


def named_source(pretrained: str | os.PathLike) -> tuple[str, str] | None:
    """(source, tag) of named weights ('tv:IMAGENET1K_V2' -> ('torchvision', 'IMAGENET1K_V2'));
    None for a path."""
    spec = str(pretrained)
    prefix, _, tag = spec.partition(":")
    if ":" in spec and not Path(spec).exists() and (
            prefix.lower() in SOURCES or prefix.lower() in _SOURCE_ALIASES):
        return normalize_source(prefix), tag
    return None


def load_pretrained(model: ImageClassifier, pretrained: str | os.PathLike) -> LoadReport:
    spec = str(pretrained)
    if named_source(spec):
        state_dict, source = fetch_named_state_dict(model, spec)
        return load_state_dict(model, state_dict, source)
    return load_checkpoint(model, spec)


def guess_num_classes(model: ImageClassifier, state_dict: dict[str, torch.Tensor],
                      source: str | None) -> int:
    """The number of classes a checkpoint's classifier was trained for (1000 if it has
    none): `model` is the architecture (the meta device will do)."""
    converted = _rename(model, state_dict, normalize_source(source)
                        or detect_source(model, state_dict))
    for key, _ in _prefixed(model):
        if key in converted and key.endswith("weight") and converted[key].ndim >= 2:
            return int(converted[key].shape[0])
    return 1000

