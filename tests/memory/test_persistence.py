import contextlib
import json
import os
import shutil
import threading

import pytest
import torch
from diffusers import DDPMScheduler, DiffusionPipeline, UNet2DModel
from safetensors import safe_open
from safetensors.torch import save_file

import spm_gen.memory.rows as rows
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
    assert loaded.seeded_ids(1, 2, torch.Generator().manual_seed(1)) == tiny_bank.seeded_ids(
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
    assert len([f for f in os.listdir(tmp_path) if f.startswith("shard-")]) == 1


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
        "was_training_target",
    }


def _edit_config(path, **fields):
    config = json.load(open(os.path.join(path, "config.json")))
    open(os.path.join(path, "config.json"), "w").write(json.dumps({**config, **fields}))


def _shard_file(path):
    return os.path.join(path, json.load(open(os.path.join(path, "config.json")))["_shards"][0]["file"])


def _committed_file(path, key):
    return os.path.join(path, json.load(open(os.path.join(path, "config.json")))[key])


def _edit_shard(path, change=lambda tensors: tensors, **metadata):
    """Rewrites the first shard with `change(tensors)` and json `metadata` fields replaced."""
    with safe_open(_shard_file(path), framework="pt") as f:
        meta, tensors = f.metadata(), {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118
    meta.update({key: json.dumps(value) for key, value in metadata.items()})
    save_file(change(tensors), _shard_file(path), metadata=meta)


def _edit_labels(path, change):
    _edit_shard(path, lambda tensors: {**tensors, "labels": change(tensors["labels"])})


@pytest.mark.parametrize(
    "damage, match",
    [
        (lambda p: open(os.path.join(p, "config.json"), "w").write("{not json"), "config.json is not valid json"),
        (lambda p: os.remove(os.path.join(p, "config.json")), "config.json is missing"),
        (lambda p: open(_shard_file(p), "wb").write(b"\x00" * 10), "cannot read shard-"),
        (lambda p: os.remove(_shard_file(p)), "cannot read shard-"),
        (lambda p: open(_committed_file(p, "_receipts_file"), "w").write("{bad"), "line 1 is not valid json"),
        (lambda p: open(_committed_file(p, "_receipts_file"), "w").write("[1, 2]\n"), "not a removal receipt"),
        (
            lambda p: _edit_config(p, _shards=[{"file": "../elsewhere.safetensors", "count": 11, "digest": ""}]),
            "_shards is not a list of shard files of this folder",
        ),
        (lambda p: _edit_config(p, _shards=7), "_shards is not a list"),
        (lambda p: _edit_config(p, _receipts_file="/etc/passwd"), "_receipts_file='/etc/passwd' is not a data file"),
        (lambda p: _edit_config(p, _num_items=None), "_num_items=None is not an integer"),
        (lambda p: _edit_config(p, _num_items=12), "the shards hold 11 items, not 12"),
        (lambda p: _edit_shard(p, ids=list(range(11))), "the ids are not unique strings"),
        (lambda p: _edit_shard(p, ids=["1"] * 11), "the ids are not unique strings"),
        (lambda p: _edit_shard(p, ids=[str(i) for i in range(20, 30)]), "disagree on the number of items"),
        (lambda p: _edit_labels(p, lambda labels: labels ^ 1), "do not match the digest"),
        (lambda p: _edit_shard(p, lambda t: {**t, "keys": t["keys"] + 1}), "selection keys of shard 0 do not match"),
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

    def flip(tensors):
        tensors["images"][3, 0, 0, 0] ^= 1
        return tensors

    _edit_shard(tmp_path, flip)
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
    assert sorted(f.split("-")[0] for f in os.listdir(tmp_path)) == [".spm", "config.json", "receipts", "shard"]


@contextlib.contextmanager
def _held_elsewhere(folder):
    """The folder's lock held by another thread for the block (another writer: the lock is re-entrant only
    within the thread that holds it)."""
    taken, done = threading.Event(), threading.Event()

    def hold():
        with folder_lock(str(folder), timeout=0):
            taken.set()
            done.wait(30)

    thread = threading.Thread(target=hold)
    thread.start()
    taken.wait(10)
    try:
        yield
    finally:
        done.set()
        thread.join()


def test_a_load_deletes_what_a_killed_save_left_unless_a_save_is_running(tiny_bank, tmp_path):
    tiny_bank.save_pretrained(tmp_path)
    old_data = _shard_file(tmp_path)
    tiny_bank.remove(ids=["3"])
    shutil.copy(old_data, tmp_path / "keep-old.bin")
    tiny_bank.save_pretrained(tmp_path)
    # a kill after the commit and before the cleanup: the previous data file (holding "3") is still there;
    # a kill during a write: a temporary file of the bank's own naming
    leftovers = [
        os.path.basename(old_data),
        ".shard-0123456789ab.safetensors.89abcdef.tmp",
        ".config.json.0badc0de.tmp",
    ]
    for name in leftovers:
        shutil.copy(tmp_path / "keep-old.bin", tmp_path / name)
    with _held_elsewhere(tmp_path):  # another writer's save in progress: its files are not ours to delete
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


def _by_id(bank: MemoryBank) -> dict:
    return {i: (bank.get_images([i])[0], int(bank.get_labels([i])[0])) for i in bank.ids}


def test_a_save_rewrites_only_the_shards_whose_rows_changed(tmp_path, monkeypatch):
    monkeypatch.setattr(rows, "SHARD_MAX_ITEMS", 4)
    bank = MemoryBank.from_images(make_images(12), torch.arange(12) % 3)
    bank.save_pretrained(tmp_path)
    first = [e["file"] for e in json.load(open(tmp_path / "config.json"))["_shards"]]
    assert len(first) == 3
    bank.remove(ids=["5"])  # in the second shard; the last row moves into its place but keeps its shard
    bank.save_pretrained(tmp_path)
    second = [e["file"] for e in json.load(open(tmp_path / "config.json"))["_shards"]]
    assert second[0] == first[0] and second[2] == first[2] and second[1] != first[1]
    loaded = MemoryBank.from_pretrained(tmp_path)
    assert sorted(loaded.ids, key=int) == sorted(bank.ids, key=int) and len(loaded) == 11
    a, b = _by_id(loaded), _by_id(bank)
    assert all(torch.equal(a[i][0], b[i][0]) and a[i][1] == b[i][1] for i in b)
    # new items fill the last shard, then open new ones; an unchanged folder is not rewritten
    loaded.add(make_images(6, seed=9), [0] * 6)
    loaded.save_pretrained(tmp_path)
    third = json.load(open(tmp_path / "config.json"))["_shards"]
    assert [e["count"] for e in third] == [4, 3, 4, 4, 2] and third[0]["file"] == first[0]
    MemoryBank.from_pretrained(tmp_path).save_pretrained(tmp_path)
    assert json.load(open(tmp_path / "config.json"))["_shards"] == third


def test_first_format_folders_load_and_convert_on_their_next_save(tmp_path):
    shutil.copytree("tests/fixtures/first_format_bank", tmp_path / "bank")  # the judge as saved before shards
    old = MemoryBank.from_pretrained(tmp_path / "bank")
    assert any(name.startswith("bank-") for name in os.listdir(tmp_path / "bank"))
    old.remove(ids=[old.ids[0]])
    old.save_pretrained(tmp_path / "bank")
    names = os.listdir(tmp_path / "bank")
    assert not any(n.startswith(("bank-", "items-")) for n in names) and any(n.startswith("shard-") for n in names)
    assert _same(MemoryBank.from_pretrained(tmp_path / "bank"), old)


def test_a_removal_reads_only_the_shards_it_touches(tmp_path, monkeypatch):
    monkeypatch.setattr(rows, "SHARD_MAX_ITEMS", 4)
    full = MemoryBank.from_images(make_images(12), torch.arange(12) % 3)
    full.save_pretrained(tmp_path)
    first = json.load(open(tmp_path / "config.json"))["_shards"]
    partial = MemoryBank.load_for_removal(str(tmp_path), ids=["5"])
    assert sorted(partial.ids, key=int) == ["4", "5", "6", "7"]  # the second shard only
    with pytest.raises(ValueError, match="loaded for a removal"):
        partial.add(make_images(1), [0])
    with pytest.raises(ValueError, match="saves back into its own folder only"):
        partial.save_pretrained(tmp_path / "elsewhere")
    receipt = partial.remove(ids=["5"], reason="r")
    partial.save_pretrained(tmp_path)
    second = json.load(open(tmp_path / "config.json"))["_shards"]
    assert [second[0], second[2]] == [first[0], first[2]] and second[1]["count"] == 3
    full.remove(ids=["5"], reason="r")
    loaded = MemoryBank.from_pretrained(tmp_path)
    assert sorted(loaded.ids, key=int) == sorted(full.ids, key=int) and loaded.receipts == [receipt]
    a, b = _by_id(loaded), _by_id(full)
    assert all(torch.equal(a[i][0], b[i][0]) and a[i][1] == b[i][1] for i in b)
    # a class spans every shard; an unknown id is an error and changes nothing
    by_class = MemoryBank.load_for_removal(str(tmp_path), labels=[1])
    assert {int(label) for label in by_class.labels} >= {1} and len(by_class) == 11
    with pytest.raises(ValueError, match=r"Unknown ids: \['99'\]"):
        MemoryBank.load_for_removal(str(tmp_path), ids=["99"]).remove(ids=["99"])
