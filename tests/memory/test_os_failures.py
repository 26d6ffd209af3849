"""What the system refuses, and what a removal relies on: a read-only folder, a lock path that is a folder,
two removals racing to one --output, a bad image_shape, embeddings that changed on disk, first-format
folders, absurd labels. Each is one clear line (or a ValueError naming the value) and a consistent folder."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from spm_gen import MemoryBank
from spm_gen.cli import main
from tests.conftest import make_images


def _cli(*args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    command = [*prefix, sys.executable, "-m", "spm_gen.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


@pytest.fixture
def read_only(folder, tmp_path):
    """(a copy of the folder that the command cannot write, the command prefix that makes it so): for root,
    whom modes do not stop, the copy is bind-mounted read-only in a mount namespace of the command's own
    (skipped where that is not allowed); for anyone else its modes are read-only."""
    source = tmp_path / "place" / "model"
    shutil.copytree(folder, source)
    prefix: tuple[str, ...] = ()
    if os.geteuid() == 0:
        mount = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" "$0" && exec "$@"'
        prefix = ("unshare", "--mount", "sh", "-c", mount, str(source))
        if shutil.which("unshare") is None or _cli("--version", prefix=prefix).returncode != 0:
            pytest.skip("no read-only mount can be made here")
    else:
        for root, _dirs, files in os.walk(source):
            for name in files:
                os.chmod(os.path.join(root, name), 0o444)
            os.chmod(root, 0o555)
    yield str(source), prefix
    for root, _, _ in os.walk(source):
        os.chmod(root, 0o755)


def _bytes_of(path: str) -> dict[str, bytes]:
    out = {}
    for root, _, files in os.walk(path):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                out[os.path.relpath(os.path.join(root, name), path)] = f.read()
    return out


@pytest.mark.slow
def test_a_read_only_folder_dry_runs_copies_to_output_and_refuses_in_place_in_one_line(read_only):
    source, prefix = read_only
    before = _bytes_of(source)
    dry = _cli("remove", source, "--ids", "3", "--dry-run", prefix=prefix)
    assert dry.returncode == 0 and "would remove 1 item " in dry.stdout, dry.stdout + dry.stderr
    in_place = _cli("remove", source, "--ids", "3", prefix=prefix)
    lines = in_place.stdout.strip().splitlines()
    assert in_place.returncode == 4 and len(lines) == 1 and not in_place.stderr.strip(), in_place
    assert ("Read-only file system" in lines[0] or "Permission denied" in lines[0]) and source in lines[0]
    output = os.path.join(os.path.dirname(source), "edited")
    copied = _cli("remove", source, "--ids", "3", "--output", output, prefix=prefix)
    assert copied.returncode == 0, copied.stdout + copied.stderr
    assert _bytes_of(source) == before  # nothing written into the read-only folder, not even a lock file
    edited = MemoryBank.from_pretrained(os.path.join(output, "memory_bank"))
    assert "3" not in edited and len(edited) == 39 and len(os.listdir(os.path.join(output, "receipts"))) == 1
    assert sorted(os.listdir(os.path.dirname(source))) == ["edited", "model"]  # no staging folder left


def test_a_lock_path_that_is_a_folder_is_one_line_and_a_dry_run_still_reads(folder, capsys):
    lock = folder / "memory_bank" / ".spm-gen.lock"
    if lock.exists():
        lock.unlink()
    lock.mkdir()
    assert main(["remove", str(folder), "--ids", "3"]) == 4
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines == [f"error: Is a directory: '{lock}' (nothing was committed unless a line above says so)"]
    assert main(["remove", str(folder), "--ids", "3", "--dry-run"]) == 0
    assert "3" in MemoryBank.from_pretrained(folder / "memory_bank")


@pytest.mark.slow
def test_two_removals_racing_to_one_output_leave_one_whole_folder(folder, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(folder, other)
    output = tmp_path / "out"
    for _ in range(3):
        runs = [
            subprocess.Popen(
                [sys.executable, "-m", "spm_gen.cli", "remove", str(src), "--ids", item, "--output", str(output)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for src, item in ((folder, "3"), (other, "5"))
        ]
        results = [(run.wait(300), run.stdout.read(), run.stderr.read()) for run in runs]
        codes = sorted(code for code, _, _ in results)
        assert codes == [0, 2], results
        loser = next(out for code, out, _ in results if code == 2)
        assert "--output" in loser and len(loser.strip().splitlines()) == 1 and "Traceback" not in loser
        bank = MemoryBank.from_pretrained(output / "memory_bank")
        assert len(bank) == 39 and ("3" in bank) != ("5" in bank)  # exactly one of the two removals
        assert sorted(os.listdir(tmp_path)) == ["model", "other", "out"]  # no staging folder left
        shutil.rmtree(output)


@pytest.mark.parametrize("shape", [5, "abc", [1, 8], [1, -8, 8], [1, 8.5, 8], None, [1, True, 8]])
def test_a_bad_image_shape_in_the_bank_config_is_one_line(folder, capsys, shape):
    config_path = folder / "memory_bank" / "config.json"
    config = json.loads(config_path.read_text())
    config["image_shape"] = shape
    config_path.write_text(json.dumps(config))
    assert main(["remove", str(folder), "--ids", "3"]) == 2
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and "image_shape" in lines[0] and "Corrupted memory bank" in lines[0], lines


def _shard_with_embeddings(tmp_path):
    bank = MemoryBank.from_images(make_images(12, seed=1), torch.arange(12) % 3)
    bank.compute_embeddings()
    bank.save_pretrained(tmp_path / "bank")
    (entry,) = json.loads((tmp_path / "bank" / "config.json").read_text())["_shards"]
    return tmp_path / "bank" / entry["file"]


def _rewrite_embeddings(shard, change) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(shard), framework="pt") as f:
        metadata, tensors = f.metadata(), {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118
    change(tensors["embeddings"])
    save_file(tensors, str(shard), metadata=metadata)


def test_zeroed_embedding_rows_are_caught_by_a_verified_load(tmp_path):
    shard = _shard_with_embeddings(tmp_path)
    _rewrite_embeddings(shard, lambda e: e[4].zero_())
    with pytest.raises(ValueError, match="embeddings do not match the digest"):
        MemoryBank.from_pretrained(tmp_path / "bank")
    assert len(MemoryBank.from_pretrained(tmp_path / "bank", verify=False)) == 12  # unverified: not re-hashed


def test_non_finite_embeddings_are_refused_on_load_and_on_set(tmp_path):
    shard = _shard_with_embeddings(tmp_path)
    _rewrite_embeddings(shard, lambda e: e[2].fill_(float("nan")))
    with pytest.raises(ValueError, match=r"1 embedding row\(s\) are not finite \(rows \[2\]\)"):
        MemoryBank.from_pretrained(tmp_path / "bank", verify=False)
    bank = MemoryBank.from_images(make_images(3), [0, 1, 2])
    with pytest.raises(ValueError, match=r"embeddings must be finite; rows \[1\]"):
        bank.set_embeddings(torch.tensor([[0.0, 1.0], [float("inf"), 0.0], [1.0, 1.0]]))


def test_absurd_labels_are_refused_naming_the_value():
    bank = MemoryBank.from_images(make_images(2), [0, 1])
    with pytest.raises(ValueError, match=r"class indices up to 2,147,483,647, got \[1000000000000\]"):
        bank.add(make_images(1, seed=3), [10**12])
    assert len(bank) == 2
    bank.add(make_images(1, seed=3), [2**31 - 1])  # the largest class index is a class


def test_a_first_format_folder_says_what_its_load_could_not_check(tmp_path, caplog):
    shutil.copytree("tests/fixtures/first_format_bank", tmp_path / "bank")
    with caplog.at_level("WARNING", logger="spm_gen.memory.storage_v1"):
        MemoryBank.from_pretrained(tmp_path / "bank")
    (message,) = [r.getMessage() for r in caplog.records if "first format" in r.getMessage()]
    assert "every image's content hash" in message and "labels and ids (a changed label loads)" in message
    assert "embeddings" in message.split("not checkable:")[1]
    MemoryBank.from_pretrained(tmp_path / "bank").save_pretrained(tmp_path / "bank")  # converts it
    caplog.clear()
    with caplog.at_level("WARNING", logger="spm_gen.memory.storage_v1"):
        MemoryBank.from_pretrained(tmp_path / "bank")
    assert not [r for r in caplog.records if "first format" in r.getMessage()]
