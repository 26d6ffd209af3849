"""Additive attention as a native CPU kernel (`additive_attention.cpp`) for sampling: the score at one max and
one add per pair-channel, its online softmax and the weighted sum in one pass, nothing materialised.

Built once per machine with the system's C++ compiler (`$CXX`, else `c++`) into the user's cache
(`$SPM_GEN_CACHE`, else `$XDG_CACHE_HOME/spm_gen` or `~/.cache/spm_gen`), keyed by the source, the compiler and
its version, the flags and the CPU, and loaded with ctypes (no Python extension); it runs on torch's OpenMP
threads. One process builds while the others wait on a file lock (`accelerate launch` starts them at once);
a build that fails or takes longer than `BUILD_TIMEOUT_S` leaves a marker, so later processes do not retry it.
Where it does not build, `native_kernel()` logs why and returns None, and the fusion keeps its
`torch.compile`d kernels. It has no backward: training keeps those too.

torch sees the kernel as the custom op `spm_gen::additive_attention` (`torch.library`, with a fake
implementation giving its output's shape), so `torch.compile` of a whole unet treats it as one opaque call on
contiguous tensors instead of tracing through raw pointers.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import math
import os
import platform
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import filelock
import torch

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("additive_attention.cpp")
FLAGS = ("-O3", "-march=native", "-ffp-contract=fast", "-fopenmp", "-std=c++17", "-shared", "-fPIC")
BUILD_TIMEOUT_S = 300  # a compiler that hangs (a broken toolchain, a full /tmp) is given up on


@dataclass(frozen=True)
class SignedChannels:
    """What the kernel needs of w: the channel order that puts those with w > 0 first (`order`, int64, `npos`
    of them) and |w| (`scale`, in the channels' own order)."""

    order: torch.Tensor
    scale: torch.Tensor
    npos: int

    @classmethod
    def of(cls, w: torch.Tensor) -> SignedChannels:
        order = torch.argsort((w <= 0).to(torch.int8), stable=True).to(torch.int64).contiguous()
        return cls(order, w.abs(), int((w > 0).sum()))

    def memory(self, library: ctypes.CDLL, keys: torch.Tensor, valid: torch.Tensor | None, w: torch.Tensor):
        """The kernel's layout of keys (= values) `(G, m, H)` with padding `valid` `(G, m)` (None: none):
        beta = -|w| b transposed, and a last row w . b that is -inf for padding (whose weight is then 0)."""
        groups, num_m, hidden = keys.shape
        padded_m = num_m + -num_m % library.token_block()
        kernel_keys = keys.new_zeros((groups, hidden + 1, padded_m))
        torch.mul(keys.transpose(1, 2), -self.scale[:, None], out=kernel_keys[:, :hidden, :num_m])
        scores = kernel_keys[:, hidden]
        scores[:, :num_m] = keys @ w
        scores[:, num_m:] = -math.inf
        if valid is not None:
            scores[:, :num_m].masked_fill_(~valid, -math.inf)
        values = _pad(_pad(keys, 1, library.token_block(), 0.0), 2, library.value_block(), 0.0)
        return KernelMemory(kernel_keys, values, self)


@dataclass(frozen=True)
class KernelMemory:
    """One group set's memory in the kernel's layout (`SignedChannels.memory`): keys `(G, H + 1, M')` (beta
    transposed and the row w . b, -inf for padding), values `(G, M', HV')`, zero-padded to the kernel's
    blocks, and the channels of w they were made with."""

    keys: torch.Tensor
    values: torch.Tensor
    channels: SignedChannels


def _pad(x: torch.Tensor, dim: int, multiple: int, value: float) -> torch.Tensor:
    """`x` padded with `value` along `dim` to a multiple of `multiple`, contiguous."""
    missing = -x.shape[dim] % multiple
    if missing:
        shape = list(x.shape)
        shape[dim] = missing
        x = torch.cat([x, x.new_full(shape, value)], dim)
    return x.contiguous()


def cache_dir() -> Path:
    """Where built kernels are kept: `$SPM_GEN_CACHE/kernels`, else under `$XDG_CACHE_HOME` or `~/.cache`."""
    if os.environ.get("SPM_GEN_CACHE"):
        return Path(os.environ["SPM_GEN_CACHE"]) / "kernels"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "spm_gen" / "kernels"


def _cpu_identity() -> str:
    """What `-march=native` compiles for: the CPU's model and flags (a library built for another CPU of a shared
    home folder would fault)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return "\n".join(dict.fromkeys(ln for ln in lines if ln.startswith(("model name", "flags", "Features"))))
    except OSError:
        return f"{platform.machine()} {platform.processor()}"


def _compiler_version(compiler: str) -> str:
    try:
        return subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def _build(compiler: str) -> Path:
    """The built library of this source, compiler, flags and CPU: found in the cache, or built now (under a lock
    shared by the processes of this machine). Raises `BuildFailed` where it failed before or fails now."""
    parts = [SOURCE.read_bytes(), compiler.encode(), _compiler_version(compiler).encode()]
    key = hashlib.sha256(b"\0".join([*parts, " ".join(FLAGS).encode(), _cpu_identity().encode()]))
    target = cache_dir() / f"additive_attention-{key.hexdigest()[:20]}.so"
    failed = target.with_suffix(".failed")
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(str(target) + ".lock", timeout=BUILD_TIMEOUT_S + 60):
        if target.exists():  # another process built it while this one waited
            return target
        if failed.exists():
            raise BuildFailed(f"it failed before ({failed.read_text()[-300:]}); delete {failed} to retry")
        with tempfile.TemporaryDirectory(dir=target.parent) as scratch:  # built aside, then renamed: never half
            built = Path(scratch) / target.name
            command = [compiler, *FLAGS, str(SOURCE), "-o", str(built)]
            try:
                subprocess.run(command, check=True, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                failed.write_text(f"{compiler} took longer than {BUILD_TIMEOUT_S} s")
                raise BuildFailed(failed.read_text()) from None
            except subprocess.CalledProcessError as error:
                failed.write_text(str(error.stderr)[-2000:])
                raise BuildFailed(str(error.stderr)[-500:]) from None
            os.replace(built, target)
    return target


class BuildFailed(RuntimeError):
    """The native kernel does not build here (why: the message)."""


@functools.cache
def native_kernel() -> ctypes.CDLL | None:
    """The built kernel library (built at the first call of a process, then cached on disk), or None where it
    cannot be built here (why is logged once)."""
    compiler = shutil.which(os.environ.get("CXX", "c++"))
    if compiler is None:
        logger.warning("no C++ compiler (%s): additive fusion stays torch.compile's", os.environ.get("CXX", "c++"))
        return None
    try:
        library = ctypes.CDLL(str(_build(compiler)))
    except (OSError, BuildFailed, filelock.Timeout) as error:
        logger.warning("native additive attention did not build (%s): fusion stays compiled", str(error)[-500:])
        return None
    int64, pointer = ctypes.c_int64, ctypes.c_void_p
    library.additive_attention.argtypes = [pointer] * 5 + [int64] * 7
    library.additive_attention.restype = None
    for block in (library.query_block, library.token_block, library.value_block):
        block.restype = int64
    return library


def additive_attention(library: ctypes.CDLL, queries: torch.Tensor, memory: KernelMemory) -> torch.Tensor:
    """softmax(w . relu(a + b)) @ b for each group: queries a `(G, Q, H)` over the memory of `memory` (float32,
    CPU) -> `(G, Q, H)`, on `torch.get_num_threads()` OpenMP threads (torch's own pool: its libgomp is the one
    already loaded). `library` is `native_kernel()`'s (the op finds it itself)."""
    num_q, hidden = queries.shape[1:]
    channels = memory.channels
    alpha = _pad(queries * channels.scale, 1, library.query_block(), 0.0)  # |w| a, rows padded to the block
    out = torch.ops.spm_gen.additive_attention(alpha, memory.keys, memory.values, channels.order, channels.npos)
    return out[:, :num_q, :hidden]


@torch.library.custom_op("spm_gen::additive_attention", mutates_args=())
def _additive_attention_op(
    alpha: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, order: torch.Tensor, npos: int
) -> torch.Tensor:
    """The kernel on contiguous float32 CPU tensors in its layout: alpha `(G, Q', H)` (rows padded to its query
    block), keys `(G, H + 1, M')`, values `(G, M', HV')`, the channel `order` with `npos` positive ones."""
    library = native_kernel()
    if library is None:
        raise RuntimeError("spm_gen::additive_attention needs the native kernel, which did not build here")
    alpha, keys, values, order = (t.contiguous() for t in (alpha, keys, values, order))
    groups, rows, hidden = alpha.shape
    num_m, value_channels = values.shape[1:]
    out = torch.empty((groups, rows, value_channels), dtype=alpha.dtype)
    pointers = (alpha.data_ptr(), keys.data_ptr(), values.data_ptr(), out.data_ptr(), order.data_ptr())
    sizes = (groups, rows, hidden, num_m, value_channels, npos)
    library.additive_attention(*pointers, *sizes, torch.get_num_threads())
    return out


@_additive_attention_op.register_fake
def _(alpha: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, order: torch.Tensor, npos: int) -> torch.Tensor:
    return alpha.new_empty((alpha.shape[0], alpha.shape[1], values.shape[2]))
