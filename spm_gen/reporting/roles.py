"""The roles a model plays in a comparison: each sampled model's key, the folder its samples go to, and the
`role` of its row. A `StrEnum`, so a role is its own name in json, folder names and tables."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    SPM_BEFORE = "spm_before"  # the SPM with the full memory
    SPM_AFTER = "spm_after"  # the same SPM after deleting from its memory
    TWIN_BEFORE = "twin_before"  # the parametric twin (no memory), as trained
    TWIN_AFTER = "twin_after"  # the twin after a comparison's one unlearning method
    TWIN_SALUN = "twin_salun"  # the twin after SalUn (random labels), beside gradient ascent
    TWIN_GRADIENT_ASCENT = "twin_gradient_ascent"
    ORACLE = "oracle"  # a model retrained without the removed data
    ORACLE_TWIN = "oracle_twin"  # the twin retrained without it
    ORACLE_SPM = "oracle_spm"  # the SPM retrained without it
    NEVER_HELD = "never_held"  # the SPM whose memory never held the removed items (trained or added)
    NEVER_ADDED = "never_added"  # the SPM before items were added to its memory
    CHOOSING = "choose"  # the twin sampled to choose which images to remove


BEFORE_AFTER = {"spm": (Role.SPM_BEFORE, Role.SPM_AFTER), "twin": (Role.TWIN_BEFORE, Role.TWIN_AFTER)}  # galleries
