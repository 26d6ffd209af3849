"""Forget requests and the parametric unlearning baselines."""

from .forget_set import ForgetSet, forget_ids

__all__ = ["ForgetSet", "forget_ids"]
