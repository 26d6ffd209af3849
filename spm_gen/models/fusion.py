"""Memory fusion: query tokens attend over the tokens of the memory items their readout assigns them.

Additive attention as in the paper (Zheng et al. 2026, Sec. 3): for query token q and memory token s,
    score(q, s) = w . relu(W_q q + W_s s + b),   out(q) = sum_s softmax_s(score) * W_s s,
the softmax running over all tokens of the memory items the query reads (in the SPM: the items that
carry the query's label). The `dot` variant uses scaled dot-product attention
(`F.scaled_dot_product_attention`) over the same tokens.

Layout. Which items each query reads comes ready-made in a `MemoryReadout` (spm_gen.memory.readout): query
groups in sets of equal padding, queries `(G, Q, L, C)` against memory `(G, N, Lm, C)`, padded and
masked, all groups of a set processed together (no Python loop per label). The additive score is computed
over chunks of memory tokens with an online (streaming) softmax, so the intermediate tensor never exceeds
`chunk_elements` floats, whatever the batch and memory sizes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..choices import FusionType, check_choice
from ..memory.readout import MemoryReadout


def additive_scores(queries: torch.Tensor, keys: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """w . relu(a + b) for every (query, key) pair of a group: `(G, q, H)`, `(G, m, H)`, `(H,)` -> `(G, q, m)`.

    Written as one elementwise expression so that `torch.compile` fuses it into a single kernel that never
    materialises the `(G, q, m, H)` intermediate.
    """
    return (torch.relu(queries[:, :, None, :] + keys[:, None, :, :]) * w).sum(-1)


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

    def forward(self, query_tokens: torch.Tensor, memory_tokens: torch.Tensor, readout: MemoryReadout) -> torch.Tensor:
        """
        Args:
            query_tokens (`torch.Tensor` of shape `(B, L, C)`): tokens of each query.
            memory_tokens (`torch.Tensor` of shape `(M, Lm, C)`): tokens of each memory item, in readout order.
            readout: which items each of the B queries reads.

        Returns:
            `torch.Tensor` of shape `(B, L, C)`.
        """
        readout.check_tokens(memory_tokens)
        length, device = query_tokens.shape[1], query_tokens.device
        if self.fusion_type == "additive":
            keys = values = self.to_memory(memory_tokens)
        else:
            keys, values = self.to_key(memory_tokens), self.to_value(memory_tokens)
        queries = self.to_query(query_tokens)
        hidden = queries.shape[-1]
        keys, values = keys.reshape(-1, hidden), values.reshape(-1, hidden)
        tokens_per_item = memory_tokens.shape[1]
        offsets = torch.arange(tokens_per_item, device=device)
        out = torch.empty_like(queries)
        for groups in readout.sets:
            num_groups = groups.items.shape[0]
            grouped = torch.zeros((num_groups, groups.width, length, hidden), dtype=queries.dtype, device=device)
            grouped[groups.group, groups.position] = queries[groups.rows]
            token_index = (groups.items[..., None] * tokens_per_item + offsets).flatten(1)
            token_valid = groups.valid[..., None].expand(-1, -1, tokens_per_item).flatten(1)
            fused = self._attend(grouped.flatten(1, 2), keys, values, token_index, token_valid)
            out[groups.rows] = fused.view(num_groups, groups.width, length, hidden)[groups.group, groups.position]
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
