"""MemoryReadout: what each query reads from memory, decided once per pipeline call or training batch.

A readout lists the memory items read (`ids`, each once: the unet's memory tokens come in this order)
and arranges the queries in groups: every query reads exactly the items of its group. Groups come in
sets of equal padding (`GroupSet`), laid out as the fusion consumes them, so nothing is regrouped at
each denoising step or for each guidance branch.

This module is also the one place that decides what a class with no memory at all reads (a class emptied
by deletion), under the name `empty_memory`: `"all"` reads all memory (the paper's test-time fallback),
`"error"` raises.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import torch

from ..choices import EmptyMemory, UnconditionalMemory, check_choice
from .ranking import derived_seed, seed_from_generator

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GroupSet:
    """Queries `rows` `(R,)`, each reading group `group[r]` at slot `position[r]` (queries keep their order
    within a group; `width` is the most queries in one group). Group g holds the items `items[g][valid[g]]`
    (`items`, `valid`: `(G, N)`, indices into the readout's items, padded)."""

    rows: torch.Tensor
    group: torch.Tensor
    position: torch.Tensor
    width: int
    items: torch.Tensor
    valid: torch.Tensor

    @classmethod
    def of(cls, rows: torch.Tensor, group: torch.Tensor, items: torch.Tensor, valid: torch.Tensor) -> GroupSet:
        order = torch.argsort(group, stable=True)
        counts = torch.bincount(group, minlength=items.shape[0])
        starts = torch.cumsum(counts, 0) - counts
        position = torch.empty_like(group)
        position[order] = torch.arange(len(order), device=group.device) - starts[group[order]]
        return cls(rows, group, position, int(counts.max()), items, valid)

    def to(self, device: torch.device | str) -> GroupSet:
        names = ("rows", "group", "position", "items", "valid")
        return replace(self, **{name: getattr(self, name).to(device) for name in names})


@dataclass(frozen=True)
class MemoryReadout:
    """What a batch of queries reads (see module docstring).

    Args:
        num_items: how many memory items are read (`len(ids)` when ids are known).
        sets: the query groups, as the fusion consumes them.
        ids: the memory items' ids, each once, in token order (None when memory is not from a bank).
        read: for each sample (the first queries; guidance adds a second branch), the ids it read.
    """

    num_items: int
    sets: tuple[GroupSet, ...]
    ids: list[str] | None = None
    read: list[list[str]] | None = None

    @classmethod
    def from_groups(
        cls, items: torch.Tensor, valid: torch.Tensor, query_group: torch.Tensor, num_items: int
    ) -> MemoryReadout:
        """Query q reads group `query_group[q]` of the padded `(G, N)` `items`/`valid`; -1 reads all items."""
        sets = []
        has_group = query_group >= 0
        if has_group.any():
            rows = torch.nonzero(has_group).flatten()
            sets.append(GroupSet.of(rows, query_group[rows], items, valid))
        if not has_group.all():
            rows = torch.nonzero(~has_group).flatten()
            everything = torch.arange(num_items, device=rows.device)[None]
            sets.append(GroupSet.of(rows, torch.zeros_like(rows), everything, torch.ones_like(everything, dtype=bool)))
        return cls(num_items, tuple(sets))

    @classmethod
    def from_id_groups(cls, groups: list[list[str]], query_group: torch.Tensor, read: list[list[str]]) -> MemoryReadout:
        """Query q reads the ids `groups[query_group[q]]` (in that order; -1: every id of every group); `read`
        is what each sample read. The readout's items are the groups' ids, each once, in order of appearance."""
        ids = list(dict.fromkeys(i for group in groups for i in group))
        position = {item_id: j for j, item_id in enumerate(ids)}
        width = max((len(group) for group in groups), default=0)
        items = torch.zeros((len(groups), width), dtype=torch.long)
        valid = torch.zeros((len(groups), width), dtype=torch.bool)
        for g, group in enumerate(groups):
            items[g, : len(group)] = torch.tensor([position[i] for i in group], dtype=torch.long)
            valid[g, : len(group)] = True
        return replace(cls.from_groups(items, valid, query_group, len(ids)), ids=ids, read=read)

    @classmethod
    def from_labels(
        cls, query_labels: torch.Tensor, item_labels: torch.Tensor, owner: torch.Tensor | None = None
    ) -> MemoryReadout:
        """Each query reads the items that carry its label; a negative label, or one that no item carries,
        reads all items. With `owner` `(M,)`, item m with `owner[m] = q >= 0` is private to query q (a training
        query's own image in its own support set: only that query reads it); -1 items are shared by label."""
        query_labels, item_labels = query_labels.reshape(-1), item_labels.to(query_labels.device)
        if owner is not None:
            return cls._from_private_labels(query_labels, item_labels, owner.to(query_labels.device))
        has_memory = torch.isin(query_labels, item_labels) & (query_labels >= 0)
        group_labels = torch.unique(query_labels[has_memory])
        match = item_labels[None, :] == group_labels[:, None]
        counts = match.sum(1)
        width = int(counts.max()) if len(counts) else 0
        items = torch.argsort((~match).to(torch.int8), dim=1, stable=True)[:, :width]  # memory order
        valid = torch.arange(width, device=match.device)[None] < counts[:, None]
        query_group = torch.full_like(query_labels, -1)
        query_group[has_memory] = torch.searchsorted(group_labels, query_labels[has_memory])
        return cls.from_groups(items, valid, query_group, len(item_labels))

    @classmethod
    def _from_private_labels(
        cls, query_labels: torch.Tensor, item_labels: torch.Tensor, owner: torch.Tensor
    ) -> MemoryReadout:
        """`from_labels` with private items: one group per query, its label's shared items (all shared items
        when none carries its label) and its own private items; another query's private items never."""
        queries = torch.arange(len(query_labels), device=query_labels.device)
        shared = (owner < 0)[None, :].expand(len(query_labels), -1)
        by_label = shared & (item_labels[None, :] == query_labels[:, None])
        has_label = by_label.any(1) & (query_labels >= 0)
        readable = torch.where(has_label[:, None], by_label, shared) | (owner[None, :] == queries[:, None])
        counts = readable.sum(1)
        width = int(counts.max()) if len(counts) else 0
        items = torch.argsort((~readable).to(torch.int8), dim=1, stable=True)[:, :width]  # memory order
        valid = torch.arange(width, device=readable.device)[None] < counts[:, None]
        return cls.from_groups(items, valid, torch.where(counts > 0, queries, -1), len(item_labels))

    def to(self, device: torch.device | str) -> MemoryReadout:
        return replace(self, sets=tuple(s.to(device) for s in self.sets))

    def check_tokens(self, memory_tokens: torch.Tensor) -> None:
        if memory_tokens.ndim != 3 or memory_tokens.shape[0] == 0 or memory_tokens.shape[0] != self.num_items:
            raise ValueError(
                f"memory_tokens must be (M, Lm, C) with M = {self.num_items} items of the readout, "
                f"got {tuple(memory_tokens.shape)}"
            )


def _unconditional_keys(keys: torch.Tensor, unconditional: UnconditionalMemory | None) -> torch.Tensor:
    """The group keys of the guided batch `[conditional; unconditional]` (-1 reads all); unguided when None."""
    if unconditional is None:
        return keys
    check_choice("unconditional_memory", unconditional, UnconditionalMemory)
    return torch.cat([keys, keys if unconditional == "class" else torch.full_like(keys, -1)])


def classes_with_memory(bank, labels: torch.Tensor, empty_memory: EmptyMemory) -> dict[int, int]:
    """The bank's class counts, after deciding what the batch's classes with no memory at all do: with
    `"error"` they raise, with `"all"` they are logged as reading all memory."""
    check_choice("empty_memory", empty_memory, EmptyMemory)
    counts = bank.class_counts()
    empty = sorted({c for c in labels.tolist() if c not in counts})
    if empty and empty_memory == "error":
        raise ValueError(f"no memory items for labels {empty} (empty_memory='error')")
    if empty:
        logger.warning("no memory items with labels %s: their samples read all memory (empty_memory='all')", empty)
    return counts


def class_readout(
    bank,
    labels: torch.Tensor,
    memory_size: int | None,
    generator: torch.Generator | None,
    empty_memory: EmptyMemory = "all",
    unconditional: UnconditionalMemory | None = None,
) -> MemoryReadout:
    """Each sample reads `memory_size` seeded items of its class (all of them when None) from `bank`.

    One selection seed for the whole call, derived from `generator`'s initial seed without advancing it
    (`derived_seed`), so the initial noise depends on the generator alone, as in every diffusers pipeline;
    without a generator it is drawn from torch's global generator. Every sample of a class reads the same
    items, and which items a class reads does not depend on the other classes of the batch: a call with one
    generator for one sample reads what sample 0 of a call with a list of generators starting with it reads
    (`per_sample_readout`). A class with no
    memory at all reads, by `empty_memory`, every item the batch selected (with its own seeded pick among
    all items added to them), or raises. With guidance (`unconditional` given), the unconditional branch
    reads its own class's memory (`"class"`) or every item the batch selected (`"all"`).
    """
    counts = classes_with_memory(bank, labels, empty_memory)
    classes = sorted(set(labels.tolist()))
    seed = derived_seed(generator) if generator is not None else seed_from_generator(None)
    chosen = {c: bank.seeded_ids(c if c in counts else None, memory_size, seed=seed) for c in classes}
    own = [c for c in classes if c in counts]  # one group per class with memory; the others read everything
    group_of = {c: g for g, c in enumerate(own)}
    keys = torch.tensor([group_of.get(c, -1) for c in labels.tolist()], dtype=torch.long)
    everything = list(dict.fromkeys(i for c in classes for i in chosen[c]))
    read = [chosen[c] if c in counts else everything for c in labels.tolist()]
    groups = [chosen[c] for c in own] + [chosen[c] for c in classes if c not in counts]
    return MemoryReadout.from_id_groups(groups, _unconditional_keys(keys, unconditional), read)


def per_sample_readout(
    bank,
    labels: torch.Tensor,
    memory_size: int | None,
    generators: list[torch.Generator],
    empty_memory: EmptyMemory = "all",
    unconditional: UnconditionalMemory | None = None,
) -> MemoryReadout:
    """Sample i reads `memory_size` items of its class chosen with a seed derived from `generators[i]` (its
    initial seed; the generator itself is not advanced), so a sample depends on its own generator and class
    only, never on the rest of the batch (diffusers' convention for a list of generators). A class with no
    memory reads, by `empty_memory`, its own seeded pick among all items, or raises. With guidance, the
    unconditional branch reads the sample's own items (`"class"`) or every item the batch selected (`"all"`)."""
    if len(generators) != len(labels):
        raise ValueError(f"got {len(generators)} generators for {len(labels)} samples")
    counts = classes_with_memory(bank, labels, empty_memory)
    read = [
        bank.seeded_ids(c if c in counts else None, memory_size, seed=derived_seed(g))
        for c, g in zip(labels.tolist(), generators)
    ]
    return MemoryReadout.from_id_groups(read, _unconditional_keys(torch.arange(len(read)), unconditional), read)


def nearest_readout(
    bank,
    references: torch.Tensor,
    labels: torch.Tensor | None,
    memory_size: int | None,
    unconditional: UnconditionalMemory | None = None,
) -> tuple[MemoryReadout, torch.Tensor]:
    """Sample i reads the `memory_size` items nearest to `references[i]` (pixel space), among its class when
    `labels` are given and the class has memory, else among all items (image variations). Returns the readout
    and the samples' labels (without `labels`: the label of each reference's nearest item)."""
    if labels is not None and len(labels) != len(references):
        raise ValueError(f"got {len(references)} reference_images but {len(labels)} class_labels")
    counts = bank.class_counts()
    read = []
    for i in range(len(references)):
        label = None if labels is None or int(labels[i]) not in counts else int(labels[i])
        k = memory_size or (counts[label] if label is not None else len(bank))
        read.append(bank.nearest_images(references[i : i + 1], k, label=label).ids[0])
    if labels is None:
        labels = bank.get_labels([r[0] for r in read])
    keys = _unconditional_keys(torch.arange(len(read)), unconditional)
    return MemoryReadout.from_id_groups(read, keys, read), labels


def anchor_readout(
    bank,
    labels: torch.Tensor,
    memory_size: int | None,
    generator: torch.Generator | list[torch.Generator] | None,
    empty_memory: EmptyMemory = "all",
    unconditional: UnconditionalMemory | None = None,
) -> MemoryReadout:
    """Sample i reads an anchor item of its class and the anchor's nearest items of its class (pixel space;
    `memory_size` items in all, the anchor first; the whole class when None): the support a model trained with
    nearest support reads, which has no target image to find neighbours of at sampling time.

    Anchors are seeded as `class_readout` selects items, depending only on the items present: with one
    generator, the samples of a class take the class's seeded items in rank order, one each (cycling); with
    a list of generators, sample i takes the first item seeded by `generators[i]`. A class with no memory
    anchors among, and reads, all items (`empty_memory="all"`), or raises."""
    counts = classes_with_memory(bank, labels, empty_memory)
    per_sample = isinstance(generator, list)
    if per_sample and len(generator) != len(labels):
        raise ValueError(f"got {len(generator)} generators for {len(labels)} samples")
    seed = None if per_sample else (derived_seed(generator) if generator is not None else seed_from_generator(None))
    classes = [c if c in counts else None for c in labels.tolist()]
    ranked = {c: bank.seeded_ids(c, None, seed=seed) for c in set(classes)} if not per_sample else {}
    seen: dict[int | None, int] = {}
    anchors = []
    for i, c in enumerate(classes):
        if per_sample:
            anchors.append(bank.seeded_ids(c, 1, seed=derived_seed(generator[i]))[0])
        else:
            anchors.append(ranked[c][seen.get(c, 0) % len(ranked[c])])
            seen[c] = seen.get(c, 0) + 1
    images = bank.get_images(anchors)
    read = []
    for i, c in enumerate(classes):
        k = min(memory_size or len(bank), counts[c] if c is not None else len(bank))
        read.append(bank.nearest_images(images[i : i + 1], k, label=c).ids[0])
    return MemoryReadout.from_id_groups(read, _unconditional_keys(torch.arange(len(read)), unconditional), read)
