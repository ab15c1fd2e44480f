"""Looking inside a network: `explain(model, images, methods=..., out_dir=...)`.

What a trained network has learnt, in the pictures of the course:

- `filters`: the first layer's kernels as an image grid (colour for RGB input);
- `patches`: for chosen layers and channels, the dataset patches that excite each channel
  most, cut to the channel's receptive field (Zeiler & Fergus, 1311.2901);
- `deconv`: the top activations of those channels projected back to the pixels by
  Zeiler & Fergus's deconvnet, beside their patches;
- attribution maps for an image and a class: `saliency` (1312.6034), `guided_backprop`
  (1412.6806), `smoothgrad`, `integrated_gradients`, `gradcam` and `occlusion`; for ViT
  and DeiT, `attention` per layer and head and attention `rollout` (2005.00928);
- for ViT and DeiT, ViT's Figure 7 (2010.11929): `pos_embedding`, the cosine similarity of
  the position embeddings, and `attention_distance`, each head's mean attention distance
  by depth;
- `class_model`: Simonyan et al.'s class-model images (1312.6034), gradient ascent on the
  pixels for a class score;
- `errors`: the confusion matrix, the most-confused pairs and the top-losses gallery of a
  checkpoint on a dataset;
- for the classical baseline, which needs no trained run, `explain_keypoints(images)`: the
  SIFT keypoints Lowe's difference-of-Gaussians detector finds, with their scales and
  orientations (`archlab explain sift-bovw IMAGE...`).

The functions of the modules below return arrays (`filters`, `top_patches`,
`deconv_projections`, `attribute`, `attention_maps`, `attention_rollout`,
`position_similarity`, `mean_attention_distance`, `class_model_images`, `error_analysis`);
`explain` runs the chosen methods (registered in methods.py),
writes one PNG per picture and an index.html that gathers them when given `out_dir`, and
`list_pictures(out_dir)` returns what was written, for a report to embed.

The package sits above archlab.train: a trained run is read by train's `load_trained`, the
loader `archlab eval` uses, and datasets by archlab.data. Its modules, bottom first:
subject (the model and how to feed it), images, datasets, maps (attributions and
attention), units (filters and patches), deconv (the deconvnet), class_model (class-model
images), positions (ViT's Figure 7), errors (the error analysis), methods (which run),
result, pictures, page (index.html from templates/index.html.j2), run (`explain`); keypoints
(`explain_keypoints`, its page from templates/keypoints.html.j2) beside them.

`archlab.explain` at the top level is the function; this package is
`importlib.import_module("archlab.explain")` or `from archlab.explain import ...`.
"""
from archlab.explain.class_model import AscentParams, ClassModel, class_model_images
from archlab.explain.datasets import dataset_batches, read_dataset, sample_dataset
from archlab.explain.deconv import Projections, deconv_projections, project
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
from archlab.explain.positions import (
    AttentionDistance, attention_distance, mean_attention_distance, position_embeddings,
    position_similarity,
)
from archlab.explain.result import Explanation, Picture
from archlab.explain.run import explain
from archlab.explain.subject import ExplainError, Subject, load_subject, subject_from_module
from archlab.explain.units import (
    Filters, TopPatches, default_patch_layers, filters, first_conv, parse_channels,
    top_patches,
)

__all__ = [
    "ATTENTION_METHODS", "ATTRIBUTION_METHODS", "METHODS", "SKIMAGE_PHOTOS", "AscentParams",
    "AttentionDistance", "Attribution", "ClassModel", "ErrorAnalysis", "ExplainError",
    "Explanation", "Filters", "ImageKeypoints", "InputImage", "KeypointsExplanation", "Picture",
    "Projections", "Subject", "TopLoss", "TopPatches", "applicable_methods",
    "attention_distance", "attention_maps", "attention_rollout", "attribute",
    "class_model_images", "dataset_batches", "deconv_projections", "default_cam_layer",
    "default_patch_layers", "error_analysis", "explain", "explain_keypoints", "filters",
    "first_conv", "list_pictures", "load_images", "load_subject", "map_layers",
    "mean_attention_distance", "parse_channels", "position_embeddings", "position_similarity",
    "project", "read_dataset", "read_images", "resolve_methods", "sample_dataset",
    "sift_keypoints", "subject_from_module", "top_patches",
]
