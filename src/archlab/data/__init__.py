"""Data: sources (named datasets, image folders, CSVs), a deterministic split, augmentation,
and the batches that feed the trainer.

A source becomes an `ImageData`: uint8 tensors in memory when it fits (the named datasets),
else a list of files decoded in DataLoader workers. Nothing here knows about models.
"""
from archlab.data.sources import (  # noqa: F401
    DEFAULT_MAX_PIXELS, DataError, ImageData, ImageFileError, Issues, channel_stats,
    dataset_splits, is_image_name, load_dataset, load_splits, open_image, to_image_mode,
)
from archlab.data.split import stratified_split, train_val_split  # noqa: F401
from archlab.data.loader import epoch_seed, make_loader  # noqa: F401,E402
from archlab.data.split import indices_digest  # noqa: F401,E402
from archlab.data.transforms import (  # noqa: F401,E402
    PRESETS, Augment, BatchPipeline, eval_transform, file_transform, pad_for, random_hflip,
    random_translate,
)
