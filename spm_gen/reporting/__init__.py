"""Before/after reports of a removal: generations, measurements, pictures and report.md (`run_report` loads
lazily: the settings are light, so the command line builds its options from them before torch loads)."""

from __future__ import annotations

from .config import ReportConfig

__all__ = ["ReportConfig", "run_report"]


def __getattr__(name: str):
    if name == "run_report":
        from .report import run_report

        return run_report
    raise AttributeError(f"module 'spm_gen.reporting' has no attribute {name!r}")
