"""Images in: ImageFolder, tar archives, CIFAR pickles; a uint8 cache, batch augmentation, fixed splits."""

from resnets.data.loaders import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    SAMPLE_ARCHIVE,
    FileBatches,
    TensorBatches,
    channel_stats,
    cutout,
    make_batches,
    normalize,
    pad_crop_flip,
    sample_images,
)
from resnets.data.sources import (
    IMAGE_SUFFIXES,
    DataError,
    ImageSet,
    decode_image,
    images_under,
    load_dataset,
    stratified_split,
    warn_left_out,
)

__all__ = [
    "IMAGE_SUFFIXES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SAMPLE_ARCHIVE",
    "DataError",
    "FileBatches",
    "ImageSet",
    "TensorBatches",
    "channel_stats",
    "decode_image",
    "images_under",
    "load_dataset",
    "make_batches",
    "normalize",
    "cutout",
    "pad_crop_flip",
    "sample_images",
    "stratified_split",
    "warn_left_out",
]
