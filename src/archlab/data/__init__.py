"""Data: sources (named datasets, image folders, CSVs), a deterministic split, augmentation,
and the batches that feed the trainer.

A source becomes an `ImageData`: uint8 tensors in memory when it fits (the named datasets),
else a list of files decoded in DataLoader workers. Nothing here knows about models.

The modules, top to bottom: load (the entry points) -> named, files, stats -> dataset ->
decode -> errors; loader -> transforms; split and cache at the bottom. Import these names
from `archlab.data`.
"""
from archlab.data.dataset import ImageData, convert_channels, resize_images  # noqa: F401
from archlab.data.decode import (  # noqa: F401
    DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, is_image_name, open_image, to_image_mode,
)
from archlab.data.errors import DataError, ImageFileError, Issues  # noqa: F401
from archlab.data.load import (  # noqa: F401
    dataset_splits, evaluation_split, load_dataset, load_splits,
)
from archlab.data.loader import FileLoader, MemoryLoader, epoch_seed, make_loader  # noqa: F401
from archlab.data.named import FASHION_MNIST_CLASSES, NAMED, read_idx  # noqa: F401
from archlab.data.split import indices_digest, stratified_split, train_val_split  # noqa: F401
from archlab.data.stats import channel_stats  # noqa: F401
from archlab.data.transforms import (  # noqa: F401
    PRESETS, Augment, BatchPipeline, eval_transform, file_transform, mix_batch, pad_for,
    pca_lighting, rand_augment, random_erasing, random_hflip, random_translate, transforms_for,
)
