"""Reliability of writers and readers: one lock for every writer, no stale save brings removed data back,
threads never tear a bank, links never keep removed bytes, readers never see a half commit, and a committed
removal always ends with its receipt file."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading

import pytest
import torch

from spm_gen import MemoryBank
from spm_gen.cli import main
from spm_gen.memory.saved_folder import SavedFolder
from tests.conftest import make_images


def _bank(path):
    return MemoryBank.from_pretrained(path / "memory_bank")


def _all_bytes(path) -> bytes:
    out = []
    for root, _, files in os.walk(path):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                out.append(f.read())
    return b"".join(out)


def _item_bytes(folder, item: str) -> bytes:
    return (_bank(folder).get_images([item]) * 255).round().to(torch.uint8).numpy().tobytes()


def _python(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_an_api_save_and_a_cli_removal_racing_keep_both_removals(folder):
    """The API's `remove` + `save_pretrained` and `spm-gen remove` take the same lock, and a save whose
    folder moved on keeps the removals made there: both removals survive, whichever commits first."""
    for trial in range(3):
        api_id, cli_id = str(4 * trial), str(4 * trial + 1)
        api = _python(f"""
            from spm_gen import MemoryBank
            bank = MemoryBank.from_pretrained({str(folder / "memory_bank")!r})
            bank.remove(ids=[{api_id!r}])
            bank.save_pretrained({str(folder / "memory_bank")!r})
        """)
        cli = subprocess.Popen([sys.executable, "-m", "spm_gen.cli", "remove", str(folder), "--ids", cli_id])
        assert api.wait(120) == 0 and cli.wait(120) == 0
        bank = _bank(folder)
        assert api_id not in bank and cli_id not in bank
        removed = {i for r in bank.receipts for i in r.removed_ids}
        assert {api_id, cli_id} <= removed


@pytest.mark.slow
def test_a_stale_save_does_not_bring_a_removed_item_back(folder):
    """The notebook case: a process has the model open while `spm-gen remove` runs on its folder, then saves."""
    removed_bytes = _item_bytes(folder, "17")
    code = f"""
        import subprocess, sys
        from spm_gen import MemoryBank
        bank = MemoryBank.from_pretrained({str(folder / "memory_bank")!r})
        subprocess.run([sys.executable, "-m", "spm_gen.cli", "remove", {str(folder)!r}, "--ids", "17"], check=True)
        bank.save_pretrained({str(folder / "memory_bank")!r})
        print("17" in bank, len(bank))
    """
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["False", "39"]  # the live bank dropped it too
    bank = _bank(folder)
    assert "17" not in bank and len(bank) == 39
    assert [r.removed_ids for r in bank.receipts] == [["17"]]  # its receipt stays in the log
    assert removed_bytes not in _all_bytes(folder / "memory_bank")
    assert len(os.listdir(folder / "receipts")) == 1


def test_a_stale_save_in_process_merges_the_removals_on_disk(folder):
    bank = _bank(folder)
    other = _bank(folder)
    other.remove(ids=["3", "5"], reason="takedown")
    other.save_pretrained(folder / "memory_bank")
    bank.remove(ids=["7"])
    bank.save_pretrained(folder / "memory_bank")
    saved = _bank(folder)
    assert not {"3", "5", "7"} & set(saved.ids) and len(saved) == 37
    assert sorted(i for r in saved.receipts for i in r.removed_ids) == ["3", "5", "7"]
    assert "3" not in bank and "5" not in bank  # the live bank follows the disk's removals


def _remove_one_by_one(bank: MemoryBank, ids: list[str], errors: list) -> None:
    try:
        for i in ids:
            bank.remove(ids=[i])
            bank.seeded_ids(0, 3, seed=1)
    except Exception as e:  # noqa: BLE001 (reported by the test)
        errors.append(e)


def test_two_threads_removing_from_one_bank_never_tear_it():
    for trial in range(5):
        bank = MemoryBank.from_images(make_images(400, seed=trial), torch.arange(400) % 4)
        expected = {i: bank.get_images([i]).clone() for i in bank.ids}
        ids, errors = list(expected), []
        threads = [threading.Thread(target=_remove_one_by_one, args=(bank, ids[k:200:2], errors)) for k in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert sorted(bank.ids, key=int) == ids[200:] and len(set(bank.ids)) == 200
        for i in bank.ids:  # every id still points at its own image
            assert torch.equal(bank.get_images([i]), expected[i])


def _cache_layout(folder, root):
    """`folder` laid out as a Hugging Face cache snapshot: every file a symlink into `blobs/`."""
    blobs, snapshot = root / "blobs", root / "snapshots" / "abc"
    blobs.mkdir(parents=True)
    for dirpath, _, files in os.walk(folder):
        for name in files:
            source = os.path.join(dirpath, name)
            relative = os.path.relpath(source, folder)
            blob = blobs / relative.replace(os.sep, "_")
            shutil.copy(source, blob)
            target = snapshot / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(blob, target)
    return snapshot


def test_a_cache_layout_refuses_in_place_removal_and_keeps_nothing_removed_with_output(folder, tmp_path, capsys):
    snapshot = _cache_layout(folder, tmp_path / "hub")
    removed = _item_bytes(folder, "17")
    before = _all_bytes(tmp_path / "hub")
    assert main(["remove", str(snapshot), "--ids", "17"]) == 2
    out = capsys.readouterr().out
    assert "symbolic links" in out and "--output" in out
    assert _all_bytes(tmp_path / "hub") == before  # nothing changed
    api = MemoryBank.from_pretrained(snapshot / "memory_bank")
    api.remove(ids=["17"])
    with pytest.raises(ValueError, match="symbolic links"):
        api.save_pretrained(snapshot / "memory_bank")
    assert main(["remove", str(snapshot), "--ids", "17", "--output", str(tmp_path / "edited")]) == 0
    assert removed not in _all_bytes(tmp_path / "edited") and "17" not in _bank(tmp_path / "edited")
    assert not any(os.path.islink(os.path.join(r, f)) for r, _, fs in os.walk(tmp_path / "edited") for f in fs)


@pytest.mark.slow
def test_readers_during_removals_see_the_old_or_the_new_commit(folder):
    writer = _python(f"""
        from spm_gen import MemoryBank
        for i in range(30):
            bank = MemoryBank.from_pretrained({str(folder / "memory_bank")!r})
            bank.remove(ids=[str(i)])
            bank.save_pretrained({str(folder / "memory_bank")!r})
        print("done", flush=True)
    """)
    sizes, failures = [], []
    while writer.poll() is None:
        try:
            sizes.append(len(MemoryBank.from_pretrained(folder / "memory_bank")))
        except (ValueError, FileNotFoundError) as e:
            failures.append(e)
    assert writer.returncode == 0 and failures == []
    assert len(sizes) > 5 and all(10 <= n <= 40 for n in sizes) and len(_bank(folder)) == 10


def test_a_removal_killed_before_its_receipt_file_gets_it_on_the_next_removal(folder, monkeypatch, capsys):
    def crash(self, receipt):
        raise KeyboardInterrupt  # the process dies after the commit, before the receipt file

    monkeypatch.setattr(SavedFolder, "write_receipt", crash)
    with pytest.raises(KeyboardInterrupt):
        main(["remove", str(folder), "--ids", "3"])
    monkeypatch.undo()
    (folder / "receipts").mkdir()
    (folder / "receipts" / ".removal-x.json.0badc0de.tmp").write_text("{")  # a killed write's stray file
    assert "3" not in _bank(folder) and os.listdir(folder / "receipts") == [".removal-x.json.0badc0de.tmp"]
    assert main(["remove", str(folder), "--ids", "3"]) == 2
    assert "were already removed" in capsys.readouterr().out
    receipts = sorted(os.listdir(folder / "receipts"))
    assert len(receipts) == 1 and json.load(open(folder / "receipts" / receipts[0]))["removed_ids"] == ["3"]
    assert main(["remove", str(folder), "--ids", "4"]) == 0 and len(os.listdir(folder / "receipts")) == 2


def test_a_bank_loaded_for_removal_refuses_embeddings(tmp_path, monkeypatch):
    from spm_gen.memory import rows

    monkeypatch.setattr(rows, "SHARD_MAX_ITEMS", 4)
    MemoryBank.from_images(make_images(12), torch.arange(12) % 3).save_pretrained(tmp_path / "bank")
    partial = MemoryBank.load_for_removal(str(tmp_path / "bank"), ids=["1"])
    assert len(partial) == 4
    with pytest.raises(ValueError, match="loaded for a removal"):
        partial.compute_embeddings()
    with pytest.raises(ValueError, match="loaded for a removal"):
        partial.set_embeddings(torch.zeros(len(partial), 3))


def test_a_receipt_that_cannot_be_written_still_reports_the_committed_removal(folder, capsys):
    (folder / "receipts").write_text("not a folder")
    assert main(["remove", str(folder), "--ids", "2"]) == 0
    out = capsys.readouterr().out
    assert "removed 1 item " in out and "receipt file could not be written" in out
    assert "2" not in _bank(folder) and [r.removed_ids for r in _bank(folder).receipts] == [["2"]]


def test_os_failures_are_one_line_with_their_own_exit_status(folder, monkeypatch, capsys):
    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device", str(folder / "memory_bank"))

    monkeypatch.setattr("spm_gen.memory.storage._write_locked", full_disk)
    assert main(["remove", str(folder), "--ids", "2"]) == 4
    lines = capsys.readouterr().out.strip().splitlines()
    bank_dir = folder / "memory_bank"
    assert lines == [
        f"error: No space left on device: '{bank_dir}' (nothing was committed unless a line above says so)"
    ]
    monkeypatch.undo()
    assert "2" in _bank(folder) and len(_bank(folder)) == 40  # consistent and unchanged
