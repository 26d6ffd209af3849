"""The yaml's keys on the command line: `--max_train_steps 200`, `--fusion_type none`, declared by the run
config's dataclass fields and its model's `__init__` arguments and parsed by argparse (light: no torch)."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any

from ..paths import suggestion
from ..utils.dataclass_options import field_default, without_none
from ..utils.source_signature import init_defaults

USAGE = "%(prog)s [-h] --config CONFIG [--dry-run] [--key value ...]"  # not the list of every key
KEY = "config_key:"  # the prefix of a config key's argparse dest, so that a command's own options stay apart


def config_keys(config_class: type) -> tuple[list[str], dict[str, Any]]:
    """The run's field names (without `model`) and the model's `{argument: default}`."""
    fields = [f.name for f in dataclasses.fields(config_class) if f.name != "model"]
    return fields, init_defaults(config_class.model_class)


def add_config_keys(parser: argparse.ArgumentParser, config_class: type) -> None:
    """Every key of `config_class`'s yaml as an option of `parser`: the run's fields, then the model's arguments
    (also as `--model.<key>`). A list takes several values (or one with commas). Values stay text, converted and
    checked by `load_config`, and a key not given is absent from the parsed arguments, so that only what is typed
    overrides the yaml."""
    fields, model = config_keys(config_class)
    hints = typing.get_type_hints(config_class)
    defaults = {f.name: field_default(f) for f in dataclasses.fields(config_class)}
    run = parser.add_argument_group("config keys (override the yaml)")
    for name in fields:
        hint = without_none(hints[name])
        shown = f"one of {', '.join(typing.get_args(hint))}; " if typing.get_origin(hint) is typing.Literal else ""
        _add_key(run, [name], name, typing.get_origin(hint) is list, f"{shown}default: {defaults[name]}")
    group = parser.add_argument_group("model arguments (--key value or --model.key value)")
    for name, default in model.items():
        names = [f"model.{name}"] if name in fields else [name, f"model.{name}"]
        _add_key(group, names, f"model.{name}", isinstance(default, tuple | list), f"default: {default}")


def _add_key(group: Any, names: list[str], key: str, many: bool, help: str) -> None:
    """One key: listed under its first name; its other names and the dashed spellings taken, not listed."""
    kwargs = {"dest": KEY + key, "default": argparse.SUPPRESS, "nargs": "+" if many else None, "metavar": "V"}
    group.add_argument(f"--{names[0]}", help=f"({help})", **kwargs)
    aliases = [*names[1:], *(n.replace("_", "-") for n in names if "_" in n)]
    if aliases:
        group.add_argument(*(f"--{n}" for n in aliases), help=argparse.SUPPRESS, **kwargs)


def config_overrides(parsed: argparse.Namespace) -> dict[str, Any]:
    """The config keys given on the command line, as text keyed by name (`model.<key>` for the model's)."""
    given = {k.removeprefix(KEY): v for k, v in vars(parsed).items() if k.startswith(KEY)}
    return {key: value[0] if isinstance(value, list) and len(value) == 1 else value for key, value in given.items()}


def unknown_argument(token: str, config_class: type) -> str:
    """The refusal of a token no option took: an unknown key with the closest known one, or a stray value."""
    if not token.startswith("--"):
        return f"unexpected argument {token!r} (overrides look like --key value)"
    key = token[2:].split("=")[0].replace("-", "_")
    fields, model = config_keys(config_class)
    return f"unknown config key --{key}{suggestion(key, sorted({*fields, *model}))}"


def parse_value(name: str, text: Any, annotation: Any) -> Any:
    """Converts command-line text (or a Python value given by code: `{"max_train_steps": 200}`) to the field's
    type, naming the key on failure."""
    if not isinstance(text, str) and not (isinstance(text, list) and all(isinstance(t, str) for t in text)):
        return checked_value(name, text, annotation)
    if isinstance(text, str) and text.lower() in ("none", "null") and without_none(annotation) is not annotation:
        return None
    annotation = without_none(annotation)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:  # a named choice: checked by `validate`
        return text[0] if isinstance(text, list) and len(text) == 1 else text
    try:
        if origin is list:
            items = text if isinstance(text, list) else [t for t in text.split(",") if t]
            return [args[0](item) for item in items]
        text = text[0] if isinstance(text, list) and len(text) == 1 else text
        if annotation is bool:
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(text)
            return text.lower() in ("true", "1", "yes")
        return annotation(text)
    except (TypeError, ValueError) as e:
        raise ValueError(f"bad value for --{name}: {text!r} ({e})") from e


def checked_value(name: str, value: Any, annotation: Any) -> Any:
    """A Python value for a field of type `annotation`: returned when its type fits (an int for a float field
    becomes a float; a tuple a list), else ValueError naming the key."""
    if value is None and without_none(annotation) is not annotation:
        return None
    annotation = without_none(annotation)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        ok = value in args
    elif origin is list:
        value = list(value) if isinstance(value, list | tuple) else value
        ok = isinstance(value, list) and all(_fits(v, args[0]) for v in value)
    else:
        ok = _fits(value, annotation)
    if not ok:
        raise ValueError(f"bad value for --{name}: {value!r} (expected {annotation})")
    return float(value) if annotation is float else value


def _fits(value: Any, annotation: Any) -> bool:
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, annotation) if isinstance(annotation, type) else True
