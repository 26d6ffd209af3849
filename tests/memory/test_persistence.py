import json
import os
import shutil

import pytest
import torch
from diffusers import DDPMScheduler, DiffusionPipeline, UNet2DModel
from safetensors.torch import load_file, save_file

import spm_gen.memory.storage as storage
from spm_gen import MemoryBank
from spm_gen.utils.locks import folder_lock
from tests.conftest import make_images


def _same(a: MemoryBank, b: MemoryBank) -> bool:
    return (
        a.ids == b.ids
        and a.hashes == b.hashes
        and a.version == b.version
        and torch.equal(a.labels, b.labels)
        and torch.equal(a.get_images(), b.get_images())
        and a.receipts == b.receipts
        and a.image_shape == b.image_shape
        and ((a.embeddings is None and b.embeddings is None) or torch.equal(a.embeddings, b.embeddings))
    )


def _folder_bytes(path: str) -> bytes:
    return b"".join(open(os.path.join(path, f), "rb").read() for f in sorted(os.listdir(path)))


def test_save_load_round_trip(tiny_bank, tmp_path):
    tiny_bank.compute_embeddings()
    tiny_bank.remove(ids=["2"], reason="r")
    tiny_bank.save_pretrained(tmp_path)
    loaded = MemoryBank.from_pretrained(tmp_path)
    assert _same(tiny_bank, loaded)
    assert loaded.embedding_info == {"type": "pixel", "size": 8}
    # the loaded bank keeps working: selection, removal, new receipts appended to the log
    assert loaded.select(1, 2, torch.Generator().manual_seed(1)) == tiny_bank.select(
        1, 2, torch.Generator().manual_seed(1)
    )
    loaded.remove(ids=["3"])
    loaded.save_pretrained(tmp_path)
    assert [r.removed_ids for r in MemoryBank.from_pretrained(tmp_path).receipts] == [["2"], ["3"]]


def test_saved_folder_holds_no_byte_of_removed_images(tiny_bank, tiny_images, tmp_path):
    tiny_bank.compute_embeddings()
    tiny_bank.save_pretrained(tmp_path)
    removed_bytes = (tiny_images[4] * 255).round().to(torch.uint8).numpy().tobytes()
    removed_embedding = tiny_bank.embeddings[4].numpy().tobytes()
    assert removed_bytes in _folder_bytes(tmp_path)
    tiny_bank.remove(ids=["4"])
    tiny_bank.save_pretrained(tmp_path)
    everything = _folder_bytes(tmp_path)
    assert removed_bytes not in everything
    assert removed_embedding not in everything
    assert len([f for f in os.listdir(tmp_path) if f.startswith("bank-")]) == 1


def test_receipt_log_has_ids_and_hashes_only(tiny_bank, tmp_path):
    receipt = tiny_bank.remove(ids=["5"], reason="gdpr")
    tiny_bank.save_pretrained(tmp_path)
    (log,) = [f for f in os.listdir(tmp_path) if f.startswith("receipts-")]
    lines = open(os.path.join(tmp_path, log)).read().splitlines()
    assert [json.loads(line) for line in lines] == [receipt.to_dict()]
    assert set(json.loads(lines[0])) == {
        "removed_ids",
        "labels",
        "hashes",
        "version_before",
        "version_after",
        "time_utc",
        "reason",
        "duration_s",
    }


def _edit_config(path, **fields):
    config = json.load(open(os.path.join(path, "config.json")))
    open(os.path.join(path, "config.json"), "w").write(json.dumps({**config, **fields}))


def _edit_items(path, **fields):
    items = json.load(open(_committed_file(path, "_items_file")))
    open(_committed_file(path, "_items_file"), "w").write(json.dumps({**items, **fields}))


def _edit_labels(path, change):
    tensors = load_file(_committed_file(path, "_data_file"))
    save_file({**tensors, "labels": change(tensors["labels"])}, _committed_file(path, "_data_file"))


def _committed_file(path, key):
    return os.path.join(path, json.load(open(os.path.join(path, "config.json")))[key])


@pytest.mark.parametrize(
    "damage, match",
    [
        (lambda p: open(os.path.join(p, "config.json"), "w").write("{not json"), "unreadable config.json"),
        (lambda p: os.remove(os.path.join(p, "config.json")), "config.json is missing"),
        (lambda p: open(_committed_file(p, "_data_file"), "wb").write(b"\x00" * 10), "cannot read bank-"),
        (lambda p: os.remove(_committed_file(p, "_items_file")), "cannot read items-"),
        (lambda p: open(_committed_file(p, "_receipts_file"), "w").write("{bad"), "cannot read receipts-"),
        (lambda p: open(_committed_file(p, "_receipts_file"), "w").write("[1, 2]\n"), "not a removal receipt"),
        (lambda p: _edit_config(p, _data_file="../elsewhere.safetensors"), "is not a data file of this folder"),
        (lambda p: _edit_config(p, _data_file=7), "_data_file=7 is not a data file"),
        (lambda p: _edit_config(p, _num_items=None), "_num_items=None is not an integer"),
        (lambda p: _edit_items(p, ids=list(range(11))), "the ids are not unique strings"),
        (lambda p: _edit_items(p, ids=["1"] * 11), "the ids are not unique strings"),
        (lambda p: _edit_labels(p, lambda labels: labels ^ 1), "do not match the digest"),
        (lambda p: _edit_labels(p, lambda labels: labels.float()), "1-D int64 column"),
        (lambda p: _edit_labels(p, lambda labels: labels[:, None]), "1-D int64 column"),
    ],
)
def test_corrupted_folder_gives_a_clear_error(tiny_bank, tmp_path, damage, match):
    tiny_bank.remove(ids=["0"])
    tiny_bank.save_pretrained(tmp_path)
    damage(tmp_path)
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        MemoryBank.from_pretrained(tmp_path)


def test_tampered_pixels_fail_hash_verification(tiny_bank, tmp_path):
    tiny_bank.save_pretrained(tmp_path)
    data_file = _committed_file(tmp_path, "_data_file")
    tensors = load_file(data_file)
    tensors["images"][3, 0, 0, 0] ^= 1
    save_file(tensors, data_file)
    with pytest.raises(ValueError, match=r"hash mismatch for ids \['3'\]"):
        MemoryBank.from_pretrained(tmp_path)
    assert len(MemoryBank.from_pretrained(tmp_path, verify=False)) == 12


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="No memory bank folder"):
        MemoryBank.from_pretrained(tmp_path / "nothing")


@pytest.mark.parametrize("fail_at", ["data", "commit"])
def test_interrupted_save_leaves_the_previous_save_loadable(tiny_bank, tmp_path, monkeypatch, fail_at):
    tiny_bank.save_pretrained(tmp_path)
    previous = MemoryBank.from_pretrained(tmp_path)
    tiny_bank.remove(labels=[1])

    if fail_at == "data":

        def broken_writer(data):
            def write(path):
                open(path, "wb").write(data[:10])
                raise KeyboardInterrupt

            return write

        monkeypatch.setattr(storage, "_write_bytes", broken_writer)
    else:
        real = storage.atomic_write_text

        def broken_commit(path, text):
            if path.endswith("config.json"):
                raise OSError("disk full")
            real(path, text)

        monkeypatch.setattr(storage, "atomic_write_text", broken_commit)
    with pytest.raises((KeyboardInterrupt, OSError)):
        tiny_bank.save_pretrained(tmp_path)
    assert _same(MemoryBank.from_pretrained(tmp_path), previous)

    monkeypatch.undo()
    tiny_bank.save_pretrained(tmp_path)  # the next save cleans up what the interrupted one left
    assert _same(MemoryBank.from_pretrained(tmp_path), tiny_bank)
    assert sorted(f.split("-")[0] for f in os.listdir(tmp_path)) == [".spm", "bank", "config.json", "items", "receipts"]


def test_a_load_deletes_what_a_killed_save_left_unless_a_save_is_running(tiny_bank, tmp_path):
    tiny_bank.save_pretrained(tmp_path)
    old_data = _committed_file(tmp_path, "_data_file")
    tiny_bank.remove(ids=["3"])
    shutil.copy(old_data, tmp_path / "keep-old.bin")
    tiny_bank.save_pretrained(tmp_path)
    # a kill after the commit and before the cleanup: the previous data file (holding "3") is still there;
    # a kill during a write: a temporary file of the bank's own naming
    leftovers = [os.path.basename(old_data), ".bank-0123456789ab.safetensors.89abcdef.tmp", ".config.json.0badc0de.tmp"]
    for name in leftovers:
        shutil.copy(tmp_path / "keep-old.bin", tmp_path / name)
    with folder_lock(str(tmp_path), timeout=0):  # a save in progress: its files are not ours to delete
        MemoryBank.from_pretrained(tmp_path)
        assert all((tmp_path / name).exists() for name in leftovers)
    assert "3" not in MemoryBank.from_pretrained(tmp_path).ids
    assert not any((tmp_path / name).exists() for name in leftovers) and (tmp_path / "keep-old.bin").exists()


class _BankPipeline(DiffusionPipeline):
    def __init__(self, unet: UNet2DModel, scheduler: DDPMScheduler, memory_bank: MemoryBank) -> None:
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler, memory_bank=memory_bank)


def test_diffusers_pipeline_saves_and_loads_the_bank(tmp_path):
    unet = UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(4, 4),
        layers_per_block=1,
        norm_num_groups=2,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
    )
    bank = MemoryBank.from_images(make_images(6), [0, 0, 1, 1, 2, 2])
    bank.remove(ids=["1"])
    _BankPipeline(unet, DDPMScheduler(), bank).save_pretrained(tmp_path)
    index = json.load(open(tmp_path / "model_index.json"))
    assert index["memory_bank"] == ["spm_gen.memory.bank", "MemoryBank"]
    loaded = _BankPipeline.from_pretrained(tmp_path)
    assert isinstance(loaded.memory_bank, MemoryBank) and _same(loaded.memory_bank, bank)
    assert _same(MemoryBank.from_pretrained(tmp_path, subfolder="memory_bank"), bank)


def test_a_save_deletes_only_the_files_the_bank_wrote(tiny_bank, tmp_path):
    tiny_bank.save_pretrained(tmp_path)
    users = ["bank-statement.csv", "items-to-buy.json", "receipts-2026.jsonl", ".notes.tmp", "x.tmp"]
    for name in users:
        (tmp_path / name).write_text("mine")
    stale = ["bank-0123456789ab.safetensors", ".items-0123456789ab.json.89abcdef.tmp"]  # the bank's own leftovers
    for name in stale:
        (tmp_path / name).write_text("old")
    tiny_bank.remove(ids=["0"])
    tiny_bank.save_pretrained(tmp_path)
    names = set(os.listdir(tmp_path))
    assert set(users) <= names and not set(stale) & names
    assert _same(MemoryBank.from_pretrained(tmp_path), tiny_bank)
