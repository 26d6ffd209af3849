"""Before/after reports of a removal: generations, measurements, pictures and report.md."""

from .config import ReportConfig
from .report import run_report

__all__ = ["ReportConfig", "run_report"]
