"""Removals killed with SIGKILL at random moments leave a loadable, consistent folder, and once it is
loaded again no file under it holds a byte string of a removed image."""

import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from spm_gen import MemoryBank
from spm_gen.memory.saved_folder import SavedFolder, remove_abandoned_staging
from spm_gen.utils.locks import LOCK_NAME, folder_lock

REMOVER = """
import sys
from spm_gen.memory.deletion import DeletionRequest, delete_from_folder
from spm_gen.memory.saved_folder import SavedFolder
folder = sys.argv[1]
print("ready", flush=True)
while True:
    live = SavedFolder(folder).load_bank(verify=False).ids
    if not live:
        break
    delete_from_folder(folder, DeletionRequest(ids=[live[0]], reason="crash test"), dry_run=False, output=None, wait=60)
"""


def _images(count: int) -> torch.Tensor:
    # random 8x8 bytes: a removed image's 64 bytes cannot turn up anywhere by chance
    return torch.randint(0, 256, (count, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def _files_holding(folder, patterns: list[bytes]) -> list[str]:
    found = []
    for root, _, names in os.walk(folder):
        for name in names:
            data = open(os.path.join(root, name), "rb").read()
            found += [f"{os.path.join(root, name)}: image {i}" for i, p in enumerate(patterns) if p in data]
    return found


@pytest.mark.slow  # seven processes killed during removals
def test_kill_9_during_removals_leaves_no_removed_byte(tmp_path):
    images = _images(400)
    MemoryBank.from_images(images, torch.arange(400) % 4).save_pretrained(tmp_path / "memory_bank")
    script = tmp_path / "remover.py"
    script.write_text(REMOVER)
    rng = random.Random(0)
    killed_after = []
    for _ in range(7):
        env = dict(os.environ, OMP_NUM_THREADS="1")
        child = subprocess.Popen([sys.executable, str(script), str(tmp_path)], stdout=subprocess.PIPE, env=env)
        assert child.stdout.readline() == b"ready\n"
        time.sleep(rng.uniform(0.2, 1.5))
        child.send_signal(signal.SIGKILL)
        child.wait()
        bank = SavedFolder(str(tmp_path)).load_bank()  # consistent (hashes verified) and cleaned
        removed = [int(i) for r in bank.receipts for i in r.removed_ids]
        assert sorted(removed + [int(i) for i in bank.ids]) == list(range(400))
        assert _files_holding(tmp_path, [images[i].numpy().tobytes() for i in removed]) == []
        killed_after.append(len(removed))
    assert killed_after == sorted(killed_after) and killed_after[-1] > 0  # removals happened, none came back


def test_abandoned_staging_folders_go_and_busy_ones_stay(tmp_path):
    abandoned, busy = tmp_path / ".copy.0123abcd.tmp", tmp_path / ".other.89abcdef.tmp"
    for folder in (abandoned, busy):
        (folder / "memory_bank").mkdir(parents=True)
        (folder / LOCK_NAME).touch()
    unrelated = tmp_path / ".cache.tmp"
    unrelated.mkdir()
    with folder_lock(str(busy), timeout=0):
        remove_abandoned_staging(str(tmp_path))
    assert not abandoned.exists() and busy.exists() and unrelated.exists()
