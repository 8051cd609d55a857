"""Command-line flags from ``setting``-declared dataclasses (``training.config.setting``): one flag
per field, parsed by its type and checked by its rule, with its help text; and the parser class
whose errors are one line."""

from __future__ import annotations

import argparse
import math
import typing
from dataclasses import fields
from typing import Any, Callable, Optional

from energyflow.training.config import Rule

__all__ = ["OneLineParser", "add_setting_flags", "given_settings", "number"]


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump
        self.exit(2, f"energyflow {self.prog.split()[-1]}: error: {message}\n")


def number(kind: Callable[[str], Any], rule: Optional[Rule]) -> Callable[[str], Any]:
    """A parser of one ``kind`` value (int or float) that also keeps ``rule``."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__}, got {text!r}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text}")
        if rule is not None and not rule.test(value):
            raise argparse.ArgumentTypeError(f"must be {rule.text}, got {text}")
        return value

    return parse


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_setting_flags(parser: argparse.ArgumentParser, cls: type, prefix: str = "") -> None:
    """One flag per command-line field of ``cls``: ``--field-name``, default None (a value the
    command line did not give), its type from the annotation (bool: --x/--no-x; list[int],
    list[str]: one or more values), its rule and choices from the field's metadata. The
    destination is ``prefix + name``."""
    hints = typing.get_type_hints(cls)
    for spec in fields(cls):
        meta = spec.metadata
        if not meta.get("command_line", True):
            continue
        kind = hints[spec.name]
        if typing.get_origin(kind) is typing.Union:  # Optional[X]
            kind = next(k for k in typing.get_args(kind) if k is not type(None))
        options: dict[str, Any] = {"default": None, "dest": prefix + spec.name}
        help_text = meta.get("help", "")
        if spec.default is not None and kind is not bool and meta.get("choices") is None:
            help_text += f" (default {spec.default})"
        if meta.get("choices") is not None:
            options["choices"] = meta["choices"]
        elif kind is not bool:
            options["metavar"] = spec.name.upper()
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(kind) is list:
            (element,) = typing.get_args(kind)
            parse = str if element is str else number(element, meta.get("rule"))
            options.update(nargs="+", type=parse)
        elif kind in (int, float):
            options["type"] = number(kind, meta.get("rule"))
        parser.add_argument(_flag(spec.name), help=help_text, **options)


def given_settings(args: argparse.Namespace, cls: type, prefix: str = "") -> dict[str, Any]:
    """The fields of ``cls`` the command line gave (not None), by field name."""
    given = {}
    for spec in fields(cls):
        value = getattr(args, prefix + spec.name, None)
        if value is not None:
            given[spec.name] = value
    return given
