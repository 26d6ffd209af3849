"""Forget requests and the parametric unlearning baselines."""

from .requests import ForgetRequest, forget_ids

__all__ = ["ForgetRequest", "forget_ids"]
