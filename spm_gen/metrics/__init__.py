"""Measurements: unlearning quality (and, later, FID and memorization)."""
