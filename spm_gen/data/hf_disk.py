"""Datasets saved with `datasets.Dataset.save_to_disk` (or `DatasetDict.save_to_disk`)."""

from __future__ import annotations

import os

import numpy as np
import torch

from .dataset import ImageDataset

IMAGE_COLUMNS = ("image", "img", "pixel_values")


def load_saved_hf_dataset(
    path: str,
    split: str = "train",
    image_column: str | None = None,
    label_column: str = "label",
    id_column: str | None = None,
    channels: int = 3,
) -> ImageDataset:
    """Loads a dataset saved with `save_to_disk` (arrow files on local disk).

    Args:
        path: the saved folder.
        split: the split to take when the folder holds a `DatasetDict`.
        image_column: the image column; default the first of "image", "img", "pixel_values" present.
        label_column: the integer label column.
        id_column: a column of unique ids; default the row positions as strings.
        channels: 1 (grayscale) or 3 (RGB).
    """
    from datasets import DatasetDict, load_from_disk

    if not os.path.isdir(path):
        raise FileNotFoundError(f"no saved dataset at '{path}' (expected a folder written by save_to_disk)")
    data = load_from_disk(path)
    if isinstance(data, DatasetDict):
        if split not in data:
            raise ValueError(f"split {split!r} not in the saved DatasetDict (splits: {list(data)})")
        data = data[split]
    columns = data.column_names
    image_column = image_column or next((c for c in IMAGE_COLUMNS if c in columns), None)
    required = {"image_column": image_column, "label_column": label_column}
    if id_column is not None:
        required["id_column"] = id_column
    for name, column in required.items():
        if column not in columns:
            raise ValueError(f"{name}={column!r} is not a column of the dataset (columns: {columns})")
    mode = "L" if channels == 1 else "RGB"
    images = []
    for image in data[image_column]:
        array = np.asarray(image.convert(mode), dtype=np.uint8)
        images.append(torch.from_numpy((array[None] if array.ndim == 2 else array.transpose(2, 0, 1)).copy()))
    shapes = {tuple(i.shape) for i in images}
    if len(shapes) > 1:
        raise ValueError(f"images of the saved dataset differ in shape: {sorted(shapes)[:5]}")
    ids = [str(i) for i in data[id_column]] if id_column else [str(i) for i in range(len(images))]
    names = getattr(data.features[label_column], "names", None) or []
    return ImageDataset(torch.stack(images), torch.tensor(data[label_column]), ids, list(names))
