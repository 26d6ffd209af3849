"""Command-line options declared once, on a settings dataclass: a field made with `option(...)` carries its help
(and a flag, where `--name-with-dashes` is not wanted); `add_options` adds one argparse option per such field
(its type, choices and default from the field), and `from_options` builds the dataclass back from the parsed
arguments. A field whose type is itself a dataclass adds that dataclass's options, prefixed with its name."""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal


def option(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    flag: str | None = None,
    one_of: str | None = None,
    **kwargs: Any,
) -> Any:
    """A dataclass field that is also an option. `flag`: its name on the command line (`--x`, or a bare name
    for a positional argument; a `--x` without a default is required); `one_of`: the options sharing this
    name are a group of which exactly one is given; `kwargs`: extra `dataclasses.field` arguments
    (`default_factory`, `kw_only`) or argparse ones (`action="append"`, `type=`)."""
    field_kwargs = {k: kwargs.pop(k) for k in ("default_factory", "kw_only") if k in kwargs}
    metadata = {"help": help, "flag": flag, "one_of": one_of, "argparse": kwargs}
    return dataclasses.field(default=default, metadata=metadata, **field_kwargs)


def _fields(cls: type, prefix: str = ""):
    """(dest, field, type) of every option of `cls` and its nested settings."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint, dest = hints[f.name], prefix + f.name
        if dataclasses.is_dataclass(hint):
            yield from _fields(hint, prefix + _prefix(f))
        elif "help" in f.metadata:
            yield dest, f, hint


def _prefix(f: dataclasses.Field) -> str:
    """What a nested settings field puts before its options' names: its name, or nothing (`nested_settings(...)`)."""
    return f.metadata.get("prefix", f.name + "_")


def nested_settings(cls: type) -> Any:
    """A field holding settings `cls` whose options keep their own names (`--per-class`, not
    `--settings-per-class`)."""
    return dataclasses.field(default_factory=cls, metadata={"prefix": ""})


def field_default(f: dataclasses.Field) -> Any:
    """A field's default value (its factory's, where it has one)."""
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def without_none(hint: Any) -> Any:
    """`X` of an annotation `X | None` (`Optional[X]`); any other annotation as it is."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return hint


def _type_kwargs(hint: Any) -> dict[str, Any]:
    """argparse's `type`, `choices`, `nargs` or `action` for a field's annotation."""
    hint = without_none(hint)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is bool:
        return {"action": "store_true"}
    if origin is Literal:
        return {"choices": list(args)}
    if origin is list:
        return {"type": args[0], "nargs": "+"}
    return {"type": hint}


def _flag(dest: str, f: dataclasses.Field) -> str:
    return f.metadata["flag"] or "--" + dest.replace("_", "-")


def flags_of(cls: type) -> dict[str, str]:
    """The flag of every option field of `cls` by field name (nested settings' too; an outer field wins a name
    both have)."""
    flags: dict[str, str] = {}
    for dest, f, _ in _fields(cls):
        flags.setdefault(f.name, _flag(dest, f))
    return flags


@contextmanager
def named_as_options(cls: type) -> Iterator[None]:
    """A `check_values` error inside names the option a user typed (`bad value --num-images=-1`), not the
    field of `cls` behind it."""
    from .validation import BadValue

    try:
        yield
    except BadValue as e:
        flag = flags_of(cls).get(e.key)
        if flag is None:
            raise
        raise ValueError(f"bad value {flag}={e.value!r}{e.hint}") from None


def check_options(options: Any) -> None:
    """Runs the `check()` of `options` and of each of its nested settings that has one; a `check_values` error
    names the option a user typed (`named_as_options`)."""
    with named_as_options(type(options)):
        for part in (options, *(getattr(options, f.name) for f in dataclasses.fields(options))):
            if dataclasses.is_dataclass(part) and hasattr(part, "check"):
                part.check()


def add_options(parser: argparse.ArgumentParser, cls: type) -> None:
    """One option per `option(...)` field of `cls` (and of its nested settings); the help says the default."""
    groups: dict[str, Any] = {}
    for dest, f, hint in _fields(cls):
        flag = _flag(dest, f)
        one_of = f.metadata.get("one_of")
        if one_of is not None and one_of not in groups:
            groups[one_of] = parser.add_mutually_exclusive_group(required=True)
        target = groups[one_of] if one_of is not None else parser
        default = field_default(f)
        hidden = default is None or default is False or default is dataclasses.MISSING or default == []
        shown = "" if hidden else f" (default: {default})"
        kwargs = {**_type_kwargs(hint), **f.metadata["argparse"]}
        if kwargs.get("action") == "append":
            kwargs.pop("nargs", None)
        if flag.startswith("--"):
            if "choices" not in kwargs and kwargs.get("action") != "store_true":
                kwargs.setdefault("metavar", flag[2:].replace("-", "_").upper())
            default = None if kwargs.get("action") == "append" else default  # argparse appends to its default
            if default is dataclasses.MISSING:
                kwargs["required"], default = True, None
            target.add_argument(flag, dest=dest, default=default, help=f.metadata["help"] + shown, **kwargs)
        else:
            target.add_argument(dest, metavar=flag, help=f.metadata["help"], **kwargs)


def from_options(cls: type, args: argparse.Namespace, prefix: str = "") -> Any:
    """The `cls` that the parsed `args` describe (options added by `add_options`; other fields at their
    defaults)."""
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        hint, dest = hints[f.name], prefix + f.name
        if dataclasses.is_dataclass(hint):
            values[f.name] = from_options(hint, args, prefix + _prefix(f))
        elif "help" in f.metadata:
            value = getattr(args, dest)
            values[f.name] = (
                field_default(f) if value is None and f.default_factory is not dataclasses.MISSING else value
            )
    return cls(**values)
