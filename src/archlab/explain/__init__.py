"""Looking inside a network: `explain(model, images, methods=..., out_dir=...)`.

What a trained network has learnt, in the pictures of the course:

- `filters`: the first layer's kernels as an image grid (colour for RGB input);
- `patches`: for chosen layers and channels, the dataset patches that excite each channel
  most, cut to the channel's receptive field (Zeiler & Fergus, 1311.2901);
- attribution maps for an image and a class: `saliency` (1312.6034), `smoothgrad`,
  `integrated_gradients`, `gradcam` and `occlusion`; for ViT and DeiT, `attention` per layer
  and head and attention `rollout` (2005.00928);
- `errors`: the confusion matrix, the most-confused pairs and the top-losses gallery of a
  checkpoint on a dataset;
- for the classical baseline, which needs no trained run, `explain_keypoints(images)`: the
  SIFT keypoints Lowe's difference-of-Gaussians detector finds, with their scales and
  orientations (`archlab explain sift-bovw IMAGE...`).

The functions of the modules below return arrays (`filters`, `top_patches`, `attribute`,
`attention_maps`, `attention_rollout`, `error_analysis`); `explain` runs the chosen methods,
writes one PNG per picture and an index.html that gathers them when given `out_dir`, and
`list_pictures(out_dir)` returns what was written, for a report to embed.

The package sits above archlab.train: a trained run is read by train's `load_trained`, the
loader `archlab eval` uses, and datasets by archlab.data. Its modules, bottom first:
subject (the model and how to feed it), images, datasets, maps (attributions and
attention), units (filters and patches), errors (the error analysis), methods (which run),
result, pictures, page (index.html from templates/index.html.j2), run (`explain`); keypoints
(`explain_keypoints`, its page from templates/keypoints.html.j2) beside them.

`archlab.explain` at the top level is the function; this package is
`importlib.import_module("archlab.explain")` or `from archlab.explain import ...`.
"""
from archlab.explain.datasets import dataset_batches, read_dataset, sample_dataset
from archlab.explain.errors import ErrorAnalysis, TopLoss, error_analysis
from archlab.explain.images import SKIMAGE_PHOTOS, InputImage, load_images, read_images
from archlab.explain.keypoints import (
    ImageKeypoints, KeypointsExplanation, explain_keypoints, sift_keypoints,
)
from archlab.explain.maps import (
    ATTENTION_METHODS, ATTRIBUTION_METHODS, Attribution, applicable_methods, attention_maps,
    attention_rollout, attribute, default_cam_layer, map_layers,
)
from archlab.explain.methods import METHODS, resolve_methods
from archlab.explain.page import list_pictures
from archlab.explain.result import Explanation, Picture
from archlab.explain.run import explain
from archlab.explain.subject import ExplainError, Subject, load_subject, subject_from_module
from archlab.explain.units import (
    Filters, TopPatches, default_patch_layers, filters, first_conv, top_patches,
)

__all__ = [
    "ATTENTION_METHODS", "ATTRIBUTION_METHODS", "METHODS", "SKIMAGE_PHOTOS", "Attribution",
    "ErrorAnalysis", "ExplainError", "Explanation", "Filters", "ImageKeypoints", "InputImage",
    "KeypointsExplanation", "Picture", "Subject", "TopLoss", "TopPatches",
    "applicable_methods", "attention_maps", "attention_rollout", "attribute",
    "dataset_batches", "default_cam_layer", "default_patch_layers", "error_analysis",
    "explain", "explain_keypoints", "filters", "first_conv", "list_pictures", "load_images",
    "load_subject", "map_layers", "read_dataset", "read_images", "resolve_methods",
    "sample_dataset", "sift_keypoints", "subject_from_module", "top_patches",
]
