"""Benchmarks are scripts, not a package: tests import them from their files."""

import importlib.util
import sys


def load_benchmark(name: str):
    """The module of `benchmarks/<name>.py`, registered in `sys.modules` (dataclasses look their module up)."""
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", f"benchmarks/{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
