import os

import numpy as np
import pytest
import torch
from PIL import Image

from spm_gen.data import (
    ImageDataset,
    load_cifar10,
    load_digits_dataset,
    load_image_folder,
    load_saved_hf_dataset,
    to_memory_bank,
)


def test_digits_dataset():
    ds = load_digits_dataset()
    assert len(ds) == 1797 and ds.image_shape == (1, 8, 8) and ds.num_classes == 10
    assert ds.images.dtype == torch.uint8 and ds.images.max() == 255
    assert sorted(set(ds.labels.tolist())) == list(range(10))
    assert ds.ids[5] == "5" and ds.images[5].shape == (1, 8, 8)
    assert load_digits_dataset(image_size=16).image_shape == (1, 16, 16)


def test_digits_split_is_disjoint_stratified_and_seeded():
    train, test = load_digits_dataset(split="train"), load_digits_dataset(split="test")
    assert len(train) + len(test) == 1797 and not set(train.ids) & set(test.ids)
    assert set(test.labels.tolist()) == set(range(10))
    assert load_digits_dataset(split="test", seed=0).ids == test.ids != load_digits_dataset(split="test", seed=1).ids
    with pytest.raises(ValueError, match="split"):
        load_digits_dataset(split="validation")


def test_to_memory_bank_and_exclude():
    ds = load_digits_dataset()
    oracle = ds.exclude(ids=["0", "1"], classes=[3])
    assert "0" not in oracle.ids and 3 not in oracle.labels.tolist()
    assert len(oracle) == 1797 - 2 - int((ds.labels == 3).sum()) + int(ds.labels[[0, 1]].eq(3).sum())
    bank = to_memory_bank(oracle)
    assert bank.ids == oracle.ids and torch.equal(bank.labels, oracle.labels)
    with pytest.raises(ValueError, match="unknown classes \\[42\\]"):
        ds.exclude(classes=[42])


def test_first_per_class_keeps_dataset_order_and_exclusions_apply_after():
    ds = load_digits_dataset(split="train")
    small = ds.first_per_class(3)
    assert len(small) == 30 and small.labels.bincount().tolist() == [3] * 10
    first_zeros = [i for i, label in zip(ds.ids, ds.labels.tolist()) if label == 0][:3]
    assert [i for i, label in zip(small.ids, small.labels.tolist()) if label == 0] == first_zeros
    assert first_zeros[0] not in small.exclude(ids=first_zeros[:1]).ids
    with pytest.raises(ValueError, match="count must be a positive integer, got 0"):
        ds.first_per_class(0)


def _write_folder(root, size=(6, 6)):
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        os.makedirs(root / cls)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")


def test_image_folder(tmp_path):
    _write_folder(tmp_path)
    ds = load_image_folder(str(tmp_path))
    assert ds.class_names == ["cat", "dog"] and ds.image_shape == (3, 6, 6)
    assert ds.ids[:2] == ["cat/0.png", "cat/1.png"] and ds.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert load_image_folder(str(tmp_path), image_size=4, channels=1).image_shape == (1, 4, 4)


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_image_folder(str(tmp_path / "missing"))
    _write_folder(tmp_path)
    Image.fromarray(np.zeros((9, 9, 3), dtype=np.uint8)).save(tmp_path / "dog" / "big.png")
    with pytest.raises(ValueError, match="dog/big.png.*image_size"):
        load_image_folder(str(tmp_path))
    (tmp_path / "dog" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="cannot read image .*broken.png"):
        load_image_folder(str(tmp_path), image_size=4)


def test_cifar10_missing_says_what_to_place_where(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        load_cifar10(str(tmp_path))


def test_saved_hf_dataset(tmp_path):
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value
    from datasets import Image as HFImage

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (5, 5, 3), dtype=np.uint8)) for _ in range(4)]
    features = Features({"img": HFImage(), "label": ClassLabel(names=["a", "b"]), "key": Value("string")})
    data = Dataset.from_dict({"img": images, "label": [0, 1, 1, 0], "key": ["w", "x", "y", "z"]}, features=features)
    DatasetDict({"train": data}).save_to_disk(str(tmp_path / "dd"))
    ds = load_saved_hf_dataset(str(tmp_path / "dd"), id_column="key")
    assert ds.ids == ["w", "x", "y", "z"] and ds.class_names == ["a", "b"] and ds.image_shape == (3, 5, 5)
    assert torch.equal(ds.images[1], torch.from_numpy(np.asarray(images[1]).transpose(2, 0, 1).copy()))
    with pytest.raises(ValueError, match="split 'test'"):
        load_saved_hf_dataset(str(tmp_path / "dd"), split="test")
    with pytest.raises(ValueError, match="label_column='y'"):
        load_saved_hf_dataset(str(tmp_path / "dd"), label_column="y")


def test_image_dataset_validates():
    with pytest.raises(ValueError, match="expected 2 labels"):
        ImageDataset(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.tensor([0]), ["a", "b"])
