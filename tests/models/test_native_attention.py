"""The native additive attention that samples on a CPU: the formula, exact under deletion, and a fallback."""

import logging
import os

import pytest
import torch

from spm_gen.memory.readout import MemoryReadout
from spm_gen.models import native_attention
from spm_gen.models.fusion import MemoryFusion
from tests.models.test_fusion import fuse, reference


def native_fusion(channels: int) -> MemoryFusion:
    fusion = MemoryFusion(channels)
    fusion.compile_scores(dynamic=True)
    assert fusion.has_native_kernel, "the native kernel did not build here (see the warning logged)"
    return fusion


@pytest.fixture
def fresh_kernel():
    """`native_kernel()` builds and loads again in the test, and the process's kernel is restored after it."""
    native_attention.native_kernel.cache_clear()
    yield
    native_attention.native_kernel.cache_clear()


@pytest.mark.parametrize("channels", [8, 5, 70])  # 5 and 70: values padded to the kernel's channel blocks
def test_native_fusion_equals_the_formula(channels):
    torch.manual_seed(0)
    fusion = native_fusion(channels)
    q = torch.randn(13, 4, channels)  # 13 queries of 4 tokens: not a multiple of the query block
    q_labels = torch.tensor([0, 2, 2, 5, 0, 1, 7, 2, 5, 1, 1, 0, -1])  # 5, 7, -1: no memory, read all of it
    s = torch.randn(203, 4, channels)  # 90 items of class 0 (360 tokens: two tiles and padding), others fewer
    s_labels = torch.cat([torch.zeros(90, dtype=torch.long), torch.arange(113) % 3])
    with torch.no_grad():
        memory = fusion.prepare(s, MemoryReadout.from_labels(q_labels, s_labels))
        assert memory.kernel is not None
        got = fusion(q, memory=memory)
        want = reference(fusion, q, q_labels, s, s_labels)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_native_output_of_a_query_does_not_depend_on_the_rest_of_the_batch():
    """Bit for bit, whatever else shares the call: other queries, other groups and the padding they bring."""
    torch.manual_seed(1)
    fusion = native_fusion(16)
    s = torch.randn(40, 4, 16)
    s_labels = torch.tensor([0] * 3 + [1] * 30 + [2] * 7)  # class 0's group is padded when class 1 shares the set
    q, labels = torch.randn(9, 4, 16), torch.tensor([0, 1, 2, 0, 1, 2, 9, 0, 1])
    with torch.no_grad():
        full = fuse(fusion, q, labels, s, s_labels)
        for i in range(len(labels)):
            assert torch.equal(fuse(fusion, q[i : i + 1], labels[i : i + 1], s, s_labels)[0], full[i])


def test_gradients_other_dtypes_and_no_native_keep_the_compiled_path():
    fusion = native_fusion(8)
    s, readout = torch.randn(6, 4, 8), MemoryReadout.from_labels(torch.tensor([0, 1]), torch.tensor([0, 1] * 3))
    assert fusion.prepare(s, readout).kernel is None  # gradients on: training has no native backward
    with torch.no_grad():
        assert fusion.prepare(s, readout).kernel is not None
        assert fusion.double().prepare(s.double(), readout).kernel is None
        off = MemoryFusion(8)
        off.compile_scores(native=False, dynamic=True)
        assert off.prepare(s, readout).kernel is None


def test_memory_prepared_for_the_native_kernel_is_not_used_with_gradients():
    fusion = native_fusion(8)
    q, s = torch.randn(2, 4, 8), torch.randn(6, 4, 8)
    with torch.no_grad():
        memory = fusion.prepare(s, MemoryReadout.from_labels(torch.tensor([0, 1]), torch.tensor([0, 1] * 3)))
    assert memory.chunks == ((),)  # the kernel's layout only
    with pytest.raises(ValueError, match="prepared for the native kernel .* with gradients on"):
        fusion(q, memory=memory)


def test_the_kernel_is_built_once_into_the_cache(fresh_kernel, monkeypatch, tmp_path):
    monkeypatch.setenv("SPM_GEN_CACHE", str(tmp_path))
    assert native_attention.native_kernel() is not None
    (built,) = (tmp_path / "kernels").glob("*.so")
    stamp = built.stat().st_mtime_ns
    native_attention.native_kernel.cache_clear()  # a new process
    assert native_attention.native_kernel() is not None and built.stat().st_mtime_ns == stamp
    assert list((tmp_path / "kernels").glob("*.so")) == [built]  # nothing left aside (beside the build lock)
    assert [p.name for p in (tmp_path / "kernels").iterdir() if p != built] == [built.name + ".lock"]


def test_without_a_working_compiler_fusion_stays_compiled(fresh_kernel, monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("SPM_GEN_CACHE", str(tmp_path))
    monkeypatch.setenv("CXX", "no-such-compiler")
    with caplog.at_level(logging.WARNING):
        assert native_attention.native_kernel() is None
    assert "no C++ compiler (no-such-compiler)" in caplog.text
    monkeypatch.delenv("CXX")
    broken = tmp_path / "broken.cpp"
    broken.write_text("this is not C++\n")
    monkeypatch.setattr(native_attention, "SOURCE", broken)
    native_attention.native_kernel.cache_clear()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert native_attention.native_kernel() is None
        fusion = MemoryFusion(8)
        fusion.compile_scores(dynamic=True)
    assert "did not build" in caplog.text and "broken.cpp" in caplog.text and not fusion.has_native_kernel
    assert list((tmp_path / "kernels").glob("*.so")) == []  # no half-built library left
    (marker,) = (tmp_path / "kernels").glob("*.failed")
    # a new process does not retry the failed build: it says so and names the marker that would let it
    native_attention.native_kernel.cache_clear()
    runs = []
    real_run = native_attention.subprocess.run
    monkeypatch.setattr(native_attention.subprocess, "run", lambda c, **k: runs.append(c) or real_run(c, **k))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert native_attention.native_kernel() is None
    assert "failed before" in caplog.text and str(marker) in caplog.text
    assert all("-o" not in command for command in runs)  # only `c++ --version`, for the cache key


def test_a_hanging_compiler_is_given_up_on(fresh_kernel, monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("SPM_GEN_CACHE", str(tmp_path))
    slow = tmp_path / "slow-c++"
    slow.write_text("#!/bin/sh\nsleep 30\n")
    slow.chmod(0o755)
    monkeypatch.setenv("CXX", str(slow))
    monkeypatch.setattr(native_attention, "BUILD_TIMEOUT_S", 1)
    monkeypatch.setattr(native_attention, "_compiler_version", lambda compiler: "slow 1.0")
    with caplog.at_level(logging.WARNING):
        assert native_attention.native_kernel() is None
    assert "took longer than 1 s" in caplog.text


def test_the_kernel_is_a_torch_op_with_a_fake_implementation():
    fusion = native_fusion(8)
    s, readout = torch.randn(6, 4, 8), MemoryReadout.from_labels(torch.tensor([0, 1]), torch.tensor([0, 1] * 3))
    with torch.no_grad():
        memory = fusion.prepare(s, readout).kernel[0]
    library = native_attention.native_kernel()
    alpha = torch.randn(2, library.query_block(), 8)
    args = (alpha, memory.keys, memory.values, memory.channels.order, memory.channels.npos)
    torch.library.opcheck(torch.ops.spm_gen.additive_attention.default, args)


@pytest.mark.slow  # torch.compile of a whole unet (seconds of compiling)
def test_compiled_fusion_inside_a_compiled_unet_samples_as_eager():
    """diffusers' speed-up recipe on top of the native kernel: `compile_fusion()` then `torch.compile(unet)`
    (before the kernel was a torch op this sampled NaN, or 0.18 from eager)."""
    from spm_gen import MemoryBank
    from tests.tiny import tiny_pipeline

    images = torch.rand(30, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    bank = MemoryBank.from_images(images, torch.arange(30) % 3)  # the issue's: 30 items, 3 classes, (32, 64)
    unet = {"block_out_channels": (32, 64), "attention_resolutions": (), "norm_num_groups": 8, "num_class_embeds": 3}
    pipe = tiny_pipeline(bank, **unet)

    def sample():
        generators = [torch.Generator().manual_seed(s) for s in (0, 1)]
        return pipe(class_labels=[0, 1], num_inference_steps=3, generator=generators, output_type="pt").images

    eager = sample()
    pipe.unet.compile_fusion()
    assert pipe.unet.fusion.has_native_kernel
    pipe.unet = torch.compile(pipe.unet)
    torch.testing.assert_close(sample(), eager, atol=1e-5, rtol=0)


def test_a_unet_with_compiled_fusion_deep_copies_and_the_copy_samples_the_same():
    # training's EMA export deep-copies the unet after compile_fusion (the ctypes handle cannot be pickled)
    import copy

    from tests.tiny import sample, tiny_pipeline

    pipe = tiny_pipeline()
    pipe.unet.compile_fusion(dynamic=True)
    twin = copy.deepcopy(pipe.unet)
    assert twin.fusion.has_native_kernel == pipe.unet.fusion.has_native_kernel
    assert twin.fusion.to_query.weight is not pipe.unet.fusion.to_query.weight
    expected = sample(pipe)
    pipe.unet = twin
    assert torch.equal(sample(pipe), expected)


BUILD_AT_ONCE = """
import os, sys, time
from pathlib import Path
ready = Path(sys.argv[1])
(ready / sys.argv[2]).touch()
while len(list(ready.iterdir())) < 2:  # both processes are here: they ask for the kernel at once
    time.sleep(0.01)
from spm_gen.models import native_attention
print("loaded" if native_attention.native_kernel() is not None else "none")
"""


@pytest.mark.slow  # two processes import torch, one compiles the kernel
def test_two_processes_asking_at_once_build_the_kernel_once(tmp_path):
    """As `accelerate launch` starts its processes: one builds under the lock, the other waits and loads it."""
    import subprocess
    import sys

    log, ready = tmp_path / "compiler.log", tmp_path / "ready"
    ready.mkdir()
    compiler = tmp_path / "c++"  # the system compiler, counting its builds
    compiler.write_text(f'#!/bin/sh\necho "$@" >> {log}\nexec c++ "$@"\n')
    compiler.chmod(0o755)
    env = {**os.environ, "SPM_GEN_CACHE": str(tmp_path / "cache"), "CXX": str(compiler)}
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", BUILD_AT_ONCE, str(ready), name], env=env, stdout=subprocess.PIPE, text=True
        )
        for name in ("a", "b")
    ]
    outputs = [run.communicate(timeout=600)[0].split() for run in runs]
    assert outputs == [["loaded"], ["loaded"]]
    builds = [line for line in log.read_text().splitlines() if " -o " in f" {line} "]
    assert len(builds) == 1, builds
    assert len(list((tmp_path / "cache" / "kernels").glob("*.so"))) == 1
