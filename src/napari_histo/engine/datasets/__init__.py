"""Training/evaluation datasets: discovery of labelled data, in-memory and lazy datasets,
group splits. Pixels are read once (small sets, resampled to the training mpp) or lazily
(PCam HDF5, slides); every dataset is picklable."""

from __future__ import annotations

from napari_histo.engine.datasets.classification import PatchDataset, PCamDataset
from napari_histo.engine.datasets.discover import (
    ClsRecord,
    SegRecord,
    find_classification_items,
    find_pcam,
    find_pcam_splits,
    find_segmentation_pairs,
)
from napari_histo.engine.datasets.images import (
    mask_to_classes,
    read_image,
    resize_image,
    resize_labels,
)
from napari_histo.engine.datasets.segmentation import (
    IGNORE_INDEX,
    ArraySample,
    SegmentationDataset,
    load_pairs,
)
from napari_histo.engine.datasets.splits import split_by_group

__all__ = [
    "IGNORE_INDEX", "ArraySample", "ClsRecord", "PCamDataset", "PatchDataset", "SegRecord",
    "SegmentationDataset", "find_classification_items", "find_pcam", "find_pcam_splits",
    "find_segmentation_pairs",
    "load_pairs", "mask_to_classes", "read_image", "resize_image", "resize_labels",
    "split_by_group",
]
