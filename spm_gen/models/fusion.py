"""Memory fusion: query tokens attend over the tokens of the memory items their readout assigns them.

Additive attention as in the paper (Zheng et al. 2026, Sec. 3): for query token q and memory token s,
    score(q, s) = w . relu(W_q q + W_s s + b),   out(q) = sum_s softmax_s(score) * W_s s,
the softmax running over all tokens of the memory items the query reads (in the SPM: the items that
carry the query's label). The `dot` variant uses scaled dot-product attention
(`F.scaled_dot_product_attention`) over the same tokens.

Layout. Which items each query reads comes ready-made in a `MemoryReadout` (spm_gen.memory.readout): query
groups in sets of equal padding, queries `(G, Q, L, C)` against memory `(G, N, Lm, C)`, padded and
masked, all groups of a set processed together (no Python loop per label). The memory side (projection,
gathering into groups) is prepared once per readout (`prepare`, reused by every step of a sampling call).
The additive score is computed over chunks of memory tokens with an online (streaming) softmax, so the
intermediate tensor never exceeds `chunk_elements` floats, whatever the batch and memory sizes. Those chunks
are cut once, in `prepare`, as contiguous tensors of at most `MAX_CHUNK_TOKENS` tokens: the compiled kernel
then always sees the same layout (no recompilation for a strided slice, a storage offset or a long
reduction when the memory size or the batch changes). Sampling on a CPU after `compile_scores` runs the
native kernel of `native_attention` instead, which needs no chunks: `prepare` then makes its layout only.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx.experimental import _config as shape_config

from ..choices import FusionType, check_choice
from ..memory.readout import MemoryReadout
from . import native_attention
from .native_attention import KernelMemory, SignedChannels


def additive_scores(queries: torch.Tensor, keys: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """w . relu(a + b) for every (query, key) pair of a group: `(G, q, H)`, `(G, m, H)`, `(H,)` -> `(G, q, m)`.

    Written as one elementwise expression so that `torch.compile` fuses it into a single kernel that never
    materialises the `(G, q, m, H)` intermediate.
    """
    return (torch.relu(queries[:, :, None, :] + keys[:, None, :, :]) * w).sum(-1)


MAX_CHUNK_TOKENS = 1024  # memory tokens per chunk of the additive score (64 items of 4x4 tokens)
DENSE = torch.contiguous_format  # what the compiled kernel is given: contiguous copies, never strided views


@dataclass(frozen=True)
class MemoryChunk:
    """Memory tokens of every group of a set, or a contiguous run of them: keys and values `(G, m, H)` (one
    tensor for both in additive fusion) and which are real, not padding (`valid`, `(G, m)`; None: all)."""

    keys: torch.Tensor
    values: torch.Tensor
    valid: torch.Tensor | None


@dataclass(frozen=True)
class FusionMemory:
    """The memory side of fusion for one readout (`MemoryFusion.prepare`): for each of its group sets, the
    chunks of its memory tokens (dot fusion: one chunk, all tokens; additive: contiguous chunks of at most
    `MAX_CHUNK_TOKENS`, fewer when `chunk_elements` is small), and, where the native kernel computes the
    fusion, each set's memory in its layout (`kernel`; the chunks are then empty: made without gradients, such
    memory is for sampling only)."""

    readout: MemoryReadout
    chunks: tuple[tuple[MemoryChunk, ...], ...]
    kernel: tuple[KernelMemory, ...] | None = None


def online_softmax_chunk(
    scores: torch.Tensor,
    values: torch.Tensor,
    valid: torch.Tensor | None,
    run_max: torch.Tensor,
    run_sum: torch.Tensor,
    acc: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One chunk of an online (streaming) softmax: scores `(G, q, m)` of the chunk's values `(G, m, H)`
    (`valid` `(G, m)` masks padding; None: none) update the running max and sum `(G, q)` and the weighted
    sum `(G, q, H)`; the result is `acc / run_sum` after the last chunk."""
    if valid is not None:
        scores = scores.masked_fill(~valid[:, None, :], -math.inf)
    new_max = torch.maximum(run_max, scores.amax(-1))
    safe_max = torch.where(torch.isinf(new_max), torch.zeros_like(new_max), new_max)
    p = torch.exp(scores - safe_max[..., None])
    correction = torch.exp(run_max - safe_max)
    return new_max, run_sum * correction + p.sum(-1), acc * correction[..., None] + p @ values


def additive_chunk(
    queries: torch.Tensor,
    keys: torch.Tensor,
    w: torch.Tensor,
    valid: torch.Tensor | None,
    run_max: torch.Tensor,
    run_sum: torch.Tensor,
    acc: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`additive_scores` followed by `online_softmax_chunk`: what `torch.compile` fuses (the score, the mask,
    the max, exp and sums in one pass; the weighted sum stays a matrix product)."""
    return online_softmax_chunk(additive_scores(queries, keys, w), keys, valid, run_max, run_sum, acc)


class MemoryFusion(nn.Module):
    """Fuses memory tokens into query tokens (see module docstring).

    Args:
        channels: token width `C` of queries and memory; the output has the same width.
        fusion_type: `"additive"` (the paper's) or `"dot"`.
        chunk_elements: bound on the additive score's intermediate tensor, in elements.
    """

    def __init__(self, channels: int, fusion_type: FusionType = "additive", chunk_elements: int = 2**22) -> None:
        super().__init__()
        check_choice("fusion_type", fusion_type, FusionType)
        self.fusion_type, self.chunk_elements = fusion_type, chunk_elements
        self._compiled_chunk = self._native = None
        if fusion_type == "additive":
            self.to_query = nn.Linear(channels, channels)  # W_q and the bias b
            self.to_memory = nn.Linear(channels, channels, bias=False)  # W_s: keys and values
            self.score = nn.Linear(channels, 1, bias=False)  # w
        else:
            self.to_query = nn.Linear(channels, channels)
            self.to_key = nn.Linear(channels, channels)
            self.to_value = nn.Linear(channels, channels)

    def compile_scores(self, native: bool = True, **compile_kwargs) -> None:
        """Computes the additive score and its online softmax with `torch.compile(additive_chunk)`: fused
        kernels (C++ on CPU, Triton on GPU) instead of eager elementwise passes over a `(G, q, m, H)`
        intermediate. The first call compiles (seconds on a CPU, tens with a cold inductor cache). With
        `dynamic=True` new memory sizes and batches do not recompile: the kernel is given fresh contiguous
        tensors only and traced without duck sizing (so sizes that happen to be equal are not assumed equal),
        leaving at most four graphs (a padding mask or none, one group or several).

        With `native` (the default), float32 fusion on a CPU without gradients (sampling) runs the native kernel
        of `native_attention` instead: score, online softmax and weighted sum in one pass, the score at one max
        and one add per pair-channel. It is built at the first call (under a second; cached on disk). Training,
        other devices and dtypes, and machines where it does not build keep the compiled kernels."""
        if self.fusion_type != "additive":
            raise ValueError(f"only the additive fusion has a score to compile (this one is {self.fusion_type!r})")
        self._native = native_attention.native_kernel() if native else None
        compiled = torch.compile(additive_chunk, **compile_kwargs)

        def without_duck_sizing(*args: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            with shape_config.patch(use_duck_shape=False):  # read when a call traces; guards are unaffected
                return compiled(*args)

        self._compiled_chunk = without_duck_sizing

    def __deepcopy__(self, memo: dict) -> MemoryFusion:
        """A copy with its own weights that shares the kernels `compile_scores` made (stateless functions; the
        native kernel's ctypes handle cannot be copied), as training's EMA export and sample grids copy the unet."""
        shared = ("_native", "_compiled_chunk")
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        for key, value in self.__dict__.items():
            new.__dict__[key] = value if key in shared else copy.deepcopy(value, memo)
        return new

    @property
    def has_native_kernel(self) -> bool:
        """Whether `compile_scores` loaded the native kernel (which then fuses float32 CPU tensors without
        gradients)."""
        return self._native is not None

    def _runs_native(self, like: torch.Tensor) -> bool:
        """Whether the native kernel computes the fusion of tensors like `like` (see `compile_scores`)."""
        cpu_float = like.device.type == "cpu" and like.dtype == torch.float32
        return self._native is not None and cpu_float and not torch.is_grad_enabled()

    def prepare(self, memory_tokens: torch.Tensor, readout: MemoryReadout) -> FusionMemory:
        """What the queries attend over, for every group set of `readout`: the memory tokens projected and
        gathered once. It depends on the memory, the readout and the weights only, so a sampling call makes
        it once for all its steps and both guidance branches (`memory_tokens`: `(M, Lm, C)` in readout order).
        """
        readout.check_tokens(memory_tokens)
        if self.fusion_type == "additive":
            keys = values = self.to_memory(memory_tokens)
        else:
            keys, values = self.to_key(memory_tokens), self.to_value(memory_tokens)
        hidden, tokens_per_item = keys.shape[-1], memory_tokens.shape[1]
        keys, values = keys.reshape(-1, hidden), values.reshape(-1, hidden)
        offsets = torch.arange(tokens_per_item, device=memory_tokens.device)
        channels = SignedChannels.of(self.score.weight[0]) if self._runs_native(keys) else None
        sets, kernel = [], []
        for groups in readout.sets:
            token_index = (groups.items[..., None] * tokens_per_item + offsets).flatten(1)
            padded = not bool(groups.valid.all())  # decided by the readout alone; no mask: the same numbers, faster
            valid = groups.valid[..., None].expand(-1, -1, tokens_per_item).flatten(1) if padded else None
            if self.fusion_type == "dot":
                sets.append((MemoryChunk(keys[token_index], values[token_index], valid),))
                continue
            if channels is not None:  # the kernel's layout only: the chunks are for the compiled and eager paths
                kernel.append(channels.memory(self._native, keys[token_index], valid, self.score.weight[0]))
                sets.append(())
                continue
            step = self._chunk_tokens(groups.items.shape[0])
            chunks = []
            for s0 in range(0, token_index.shape[1], step):
                chunk = keys[token_index[:, s0 : s0 + step]]  # gathered: contiguous, at offset 0
                chunk_valid = None if valid is None else valid[:, s0 : s0 + step].clone(memory_format=DENSE)
                chunks.append(MemoryChunk(chunk, chunk, chunk_valid))
            sets.append(tuple(chunks))
        return FusionMemory(readout, tuple(sets), tuple(kernel) if channels is not None else None)

    def _chunk_tokens(self, num_groups: int) -> int:
        """Memory tokens per additive chunk: at most `MAX_CHUNK_TOKENS`, and few enough that one query per
        group stays within `chunk_elements`."""
        return max(1, min(MAX_CHUNK_TOKENS, self.chunk_elements // (num_groups * self._elements_per_pair())))

    def _elements_per_pair(self) -> int:
        """Intermediate elements per (query, memory token) pair of the additive score: eager materialises the
        `(G, q, m, H)` sum before the relu, the compiled kernel only the `(G, q, m)` scores."""
        return 1 if self._compiled_chunk is not None else self.to_memory.out_features

    def forward(
        self,
        query_tokens: torch.Tensor,
        memory_tokens: torch.Tensor | None = None,
        readout: MemoryReadout | None = None,
        memory: FusionMemory | None = None,
    ) -> torch.Tensor:
        """
        Args:
            query_tokens (`torch.Tensor` of shape `(B, L, C)`): tokens of each query.
            memory_tokens (`torch.Tensor` of shape `(M, Lm, C)`): tokens of each memory item, in readout order.
            readout: which items each of the B queries reads.
            memory: `prepare(memory_tokens, readout)`, made once per sampling call (then give it instead).

        Returns:
            `torch.Tensor` of shape `(B, L, C)`.
        """
        if memory is None:
            if memory_tokens is None or readout is None:
                raise ValueError("fusion needs memory_tokens and their readout, or their prepared memory")
            memory = self.prepare(memory_tokens, readout)
        length = query_tokens.shape[1]
        queries = self.to_query(query_tokens)
        hidden = queries.shape[-1]
        out = torch.empty_like(queries)
        native = memory.kernel is not None
        if native and not self._runs_native(queries):
            raise ValueError(
                "this memory was prepared for the native kernel (float32 on a CPU, no gradients); prepare it again "
                f"for queries of dtype {queries.dtype} on {queries.device} with gradients "
                f"{'on' if torch.is_grad_enabled() else 'off'}"
            )
        for index, (groups, chunks) in enumerate(zip(memory.readout.sets, memory.chunks)):
            num_groups = groups.items.shape[0]
            grouped = queries.new_zeros((num_groups, groups.width, length, hidden))
            grouped[groups.group, groups.position] = queries[groups.rows]
            if self.fusion_type == "dot":
                (whole,) = chunks
                mask = None if whole.valid is None else whole.valid[:, None, :]
                fused = F.scaled_dot_product_attention(grouped.flatten(1, 2), whole.keys, whole.values, attn_mask=mask)
            elif native:
                fused = native_attention.additive_attention(self._native, grouped.flatten(1, 2), memory.kernel[index])
            else:
                fused = self._additive(grouped.flatten(1, 2), chunks)
            out[groups.rows] = fused.view(num_groups, groups.width, length, hidden)[groups.group, groups.position]
        return out

    def _additive(self, queries: torch.Tensor, chunks: tuple[MemoryChunk, ...]) -> torch.Tensor:
        """Additive attention of queries `(G, Q, H)` over the memory chunks of their set (keys = values) with
        an online softmax over the chunks; queries in even chunks so that the intermediate stays within
        `chunk_elements` (and no chunk is a lone remainder row)."""
        groups, num_q, _ = queries.shape
        w = self.score.weight[0]
        widest = max(chunk.keys.shape[1] for chunk in chunks)
        q_max = max(1, self.chunk_elements // (groups * widest * self._elements_per_pair()))
        q_chunk = math.ceil(num_q / math.ceil(num_q / q_max))
        out = torch.empty_like(queries)
        for q0 in range(0, num_q, q_chunk):
            a = queries[:, q0 : q0 + q_chunk].clone(memory_format=DENSE)  # not a view: no guards on its base
            run_max = torch.full(a.shape[:2], -math.inf, dtype=a.dtype, device=a.device)
            run_sum = torch.zeros(a.shape[:2], dtype=a.dtype, device=a.device)
            acc = torch.zeros_like(a)
            for chunk in chunks:
                b, valid = chunk.keys, chunk.valid  # (G, m, H), (G, m)
                if self._compiled_chunk is not None:
                    run_max, run_sum, acc = self._compiled_chunk(a, b, w, valid, run_max, run_sum, acc)
                else:
                    scores = torch.relu_(a[:, :, None, :] + b[:, None, :, :]) @ w  # (G, q, m)
                    run_max, run_sum, acc = online_softmax_chunk(scores, b, valid, run_max, run_sum, acc)
            out[:, q0 : q0 + q_chunk] = acc / run_sum[..., None]
        return out
