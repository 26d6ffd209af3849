"""Memory fusion: query tokens attend over the tokens of memory items that carry the query's label.

Additive attention as in the paper (Zheng et al. 2026, Sec. 3): for query token q and memory token s,
    score(q, s) = w . relu(W_q q + W_s s + b),   out(q) = sum_s softmax_s(score) * W_s s,
the softmax running over all tokens of the memory items whose label equals the query's label. The `dot`
variant uses scaled dot-product attention (`F.scaled_dot_product_attention`) under the same label mask.
A query whose label has no memory reads all memory tokens (the paper's test-time fallback).

Layout. Queries and memory are arranged in groups, one per query label present in memory, plus one
group for queries whose label has no memory: queries `(G, Q, L, C)` and memory `(G, N, Lm, C)`, padded
and masked. All labels are processed together (no Python loop per label). The additive score is computed
over chunks of memory tokens with an online (streaming) softmax, so the intermediate tensor never exceeds
`chunk_elements` floats, whatever the batch and memory sizes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

FUSION_TYPES = ("additive", "dot")


def additive_scores(queries: torch.Tensor, keys: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """w . relu(a + b) for every (query, key) pair of a group: `(G, q, H)`, `(G, m, H)`, `(H,)` -> `(G, q, m)`.

    Written as one elementwise expression so that `torch.compile` fuses it into a single kernel that never
    materialises the `(G, q, m, H)` intermediate.
    """
    return (torch.relu(queries[:, :, None, :] + keys[:, None, :, :]) * w).sum(-1)


EMPTY_MEMORY_POLICIES = ("all", "error")


def _group_memory(group_labels: torch.Tensor, memory_labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per group label, the indices of its memory items in memory order, padded: `(G, N)` index and valid mask."""
    match = memory_labels[None, :] == group_labels[:, None]
    counts = match.sum(1)
    width = int(counts.max())
    order = torch.argsort((~match).to(torch.int8), dim=1, stable=True)[:, :width]
    valid = torch.arange(width, device=match.device)[None] < counts[:, None]
    return order, valid


def _positions_in_groups(group: torch.Tensor, num_groups: int) -> tuple[torch.Tensor, int]:
    """Slot of each query inside its group (queries keep their order within a group), and the widest group."""
    order = torch.argsort(group, stable=True)
    counts = torch.bincount(group, minlength=num_groups)
    starts = torch.cumsum(counts, 0) - counts
    position = torch.empty_like(group)
    position[order] = torch.arange(len(order), device=group.device) - starts[group[order]]
    return position, int(counts.max())


class MemoryFusion(nn.Module):
    """Fuses memory tokens into query tokens (see module docstring).

    Args:
        channels: token width `C` of queries and memory; the output has the same width.
        fusion_type: `"additive"` (the paper's) or `"dot"`.
        empty_memory: `"all"` (a query whose label has no memory reads all memory) or `"error"`.
        chunk_elements: bound on the additive score's intermediate tensor, in elements.
    """

    def __init__(
        self, channels: int, fusion_type: str = "additive", empty_memory: str = "all", chunk_elements: int = 2**22
    ) -> None:
        super().__init__()
        if fusion_type not in FUSION_TYPES:
            raise ValueError(f"fusion_type must be one of {FUSION_TYPES}, got {fusion_type!r}")
        if empty_memory not in EMPTY_MEMORY_POLICIES:
            raise ValueError(f"empty_memory must be one of {EMPTY_MEMORY_POLICIES}, got {empty_memory!r}")
        self.fusion_type, self.empty_memory, self.chunk_elements = fusion_type, empty_memory, chunk_elements
        self._compiled_scores = None
        if fusion_type == "additive":
            self.to_query = nn.Linear(channels, channels)  # W_q and the bias b
            self.to_memory = nn.Linear(channels, channels, bias=False)  # W_s: keys and values
            self.score = nn.Linear(channels, 1, bias=False)  # w
        else:
            self.to_query = nn.Linear(channels, channels)
            self.to_key = nn.Linear(channels, channels)
            self.to_value = nn.Linear(channels, channels)

    def compile_scores(self, **compile_kwargs) -> None:
        """Computes the additive score with `torch.compile(additive_scores)`: one fused kernel (C++ on CPU,
        Triton on GPU) instead of eager elementwise passes over a `(G, q, m, H)` intermediate. The first call
        for each new shape compiles (tens of seconds on a CPU)."""
        if self.fusion_type != "additive":
            raise ValueError(f"only the additive fusion has a score to compile (this one is {self.fusion_type!r})")
        self._compiled_scores = torch.compile(additive_scores, **compile_kwargs)

    def forward(
        self,
        query_tokens: torch.Tensor,
        query_labels: torch.Tensor,
        memory_tokens: torch.Tensor,
        memory_labels: torch.Tensor,
    ) -> torch.Tensor:
        """
        Args:
            query_tokens (`torch.Tensor` of shape `(B, L, C)`): tokens of each query.
            query_labels (`torch.Tensor` of shape `(B,)`): the label each query reads memory of; a negative
                label reads all memory (never an error, whatever `empty_memory` says).
            memory_tokens (`torch.Tensor` of shape `(M, Lm, C)`): tokens of each memory item.
            memory_labels (`torch.Tensor` of shape `(M,)`): each memory item's label (non-negative).

        Returns:
            `torch.Tensor` of shape `(B, L, C)`.
        """
        if memory_tokens.ndim != 3 or memory_tokens.shape[0] == 0 or memory_tokens.shape[0] != len(memory_labels):
            raise ValueError(
                f"memory_tokens must be (M, Lm, C) with M = len(memory_labels) > 0, got {tuple(memory_tokens.shape)}"
                f" and {len(memory_labels)} labels"
            )
        length = query_tokens.shape[1]
        device = query_tokens.device
        memory_labels = memory_labels.to(device)
        query_labels = query_labels.to(device)
        has_memory = torch.isin(query_labels, memory_labels) & (query_labels >= 0)
        if self.empty_memory == "error":
            missing = ~has_memory & (query_labels >= 0)
            if missing.any():
                raise ValueError(f"no memory items for labels {sorted(set(query_labels[missing].tolist()))}")

        if self.fusion_type == "additive":
            keys = values = self.to_memory(memory_tokens)
            queries = self.to_query(query_tokens)
        else:
            keys, values = self.to_key(memory_tokens), self.to_value(memory_tokens)
            queries = self.to_query(query_tokens)
        hidden = queries.shape[-1]
        keys, values = keys.reshape(-1, hidden), values.reshape(-1, hidden)
        tokens_per_item = memory_tokens.shape[1]

        # one group per query label that has memory, and one group reading all memory for the rest
        sets = []
        if has_memory.any():
            rows = torch.nonzero(has_memory).flatten()
            group_labels = torch.unique(query_labels[rows])
            items, valid = _group_memory(group_labels, memory_labels)
            sets.append((rows, torch.searchsorted(group_labels, query_labels[rows]), items, valid))
        if not has_memory.all():
            rows = torch.nonzero(~has_memory).flatten()
            items = torch.arange(len(memory_labels), device=device)[None]
            sets.append((rows, torch.zeros_like(rows), items, torch.ones_like(items, dtype=torch.bool)))

        out = torch.empty_like(queries)
        offsets = torch.arange(tokens_per_item, device=device)
        for rows, group, items, valid in sets:
            num_groups = items.shape[0]
            position, width = _positions_in_groups(group, num_groups)
            grouped = torch.zeros((num_groups, width, length, hidden), dtype=queries.dtype, device=device)
            grouped[group, position] = queries[rows]
            token_index = (items[..., None] * tokens_per_item + offsets).flatten(1)
            token_valid = valid[..., None].expand(-1, -1, tokens_per_item).flatten(1)
            fused = self._attend(grouped.flatten(1, 2), keys, values, token_index, token_valid)
            out[rows] = fused.view(num_groups, width, length, hidden)[group, position]
        return out

    def _attend(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        token_index: torch.Tensor,
        token_valid: torch.Tensor,
    ) -> torch.Tensor:
        """Grouped attention. queries `(G, Q, H)`; token_index/valid `(G, N)` into keys/values `(T, H)`."""
        if self.fusion_type == "dot":
            k, v = keys[token_index], values[token_index]
            return F.scaled_dot_product_attention(queries, k, v, attn_mask=token_valid[:, None, :])
        return self._additive(queries, keys, token_index, token_valid)

    def _additive(
        self, queries: torch.Tensor, keys: torch.Tensor, token_index: torch.Tensor, token_valid: torch.Tensor
    ) -> torch.Tensor:
        """Additive attention with an online softmax over chunks of memory tokens (bounded intermediates)."""
        groups, num_q, hidden = queries.shape
        num_tokens = token_index.shape[1]
        w = self.score.weight[0]
        # eager: the (G, q, m, H) intermediate is bounded; compiled: only the (G, q, m) scores exist
        per_pair = 1 if self._compiled_scores is not None else hidden
        q_chunk = max(1, min(num_q, self.chunk_elements // max(1, groups * per_pair)))
        out = torch.empty_like(queries)
        for q0 in range(0, num_q, q_chunk):
            a = queries[:, q0 : q0 + q_chunk]
            m_chunk = max(1, min(num_tokens, self.chunk_elements // max(1, groups * a.shape[1] * per_pair)))
            run_max = torch.full(a.shape[:2], -math.inf, dtype=a.dtype, device=a.device)
            run_sum = torch.zeros(a.shape[:2], dtype=a.dtype, device=a.device)
            acc = torch.zeros_like(a)
            for s0 in range(0, num_tokens, m_chunk):
                b = keys[token_index[:, s0 : s0 + m_chunk]]  # (G, m, H)
                if self._compiled_scores is not None:
                    scores = self._compiled_scores(a, b, w)
                else:
                    scores = torch.relu_(a[:, :, None, :] + b[:, None, :, :]) @ w  # (G, q, m)
                scores = scores.masked_fill(~token_valid[:, None, s0 : s0 + m_chunk], -math.inf)
                new_max = torch.maximum(run_max, scores.amax(-1))
                safe_max = torch.where(torch.isinf(new_max), torch.zeros_like(new_max), new_max)
                p = torch.exp(scores - safe_max[..., None])
                correction = torch.exp(run_max - safe_max)
                run_sum = run_sum * correction + p.sum(-1)
                acc = acc * correction[..., None] + p @ b
                run_max = new_max
            out[:, q0 : q0 + q_chunk] = acc / run_sum[..., None]
        return out
