"""A class's `__init__` arguments read from its source file, without importing it: a config's keys and
value types are checked before torch and diffusers load (seconds), and the class is imported only to be
built (`import_target`)."""

from __future__ import annotations

import ast
import functools
import importlib
import os
from typing import Any

_PACKAGES_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def init_defaults(target: str) -> dict[str, Any]:
    """`{argument: default}` of the `__init__` of `target` ("package.module:Class"), in order. Every argument
    needs a literal default (a number, string, tuple, ... as `ast.literal_eval` reads it). The source is read
    once per target.

    Raises:
        ValueError: the class or its `__init__` is not in the module's source, or a default is not a literal.
    """
    return dict(_read_defaults(target))


@functools.cache
def _read_defaults(target: str) -> tuple[tuple[str, Any], ...]:
    module, class_name = target.split(":")
    path = os.path.join(_PACKAGES_ROOT, *module.split(".")) + ".py"
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)
    init = next(
        (
            node
            for cls in tree.body
            if isinstance(cls, ast.ClassDef) and cls.name == class_name
            for node in cls.body
            if isinstance(node, ast.FunctionDef) and node.name == "__init__"
        ),
        None,
    )
    if init is None:
        raise ValueError(f"no class {class_name} with an __init__ in {path}")
    arguments = init.args.args[1:]  # without self
    if len(init.args.defaults) != len(arguments):
        raise ValueError(f"{target}.__init__: every argument needs a default")
    try:
        return tuple((a.arg, ast.literal_eval(d)) for a, d in zip(arguments, init.args.defaults))
    except ValueError as e:
        raise ValueError(f"{target}.__init__: a default is not a literal ({e})") from e


def import_target(target: str) -> Any:
    """The class or function `target` ("package.module:name") names, imported."""
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)
