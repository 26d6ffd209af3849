"""Measurements: FID/KID (clean-fid), memorization, and classification unlearning."""
