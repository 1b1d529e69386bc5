"""Typed options declared once: a dataclass field with its help, default, and valid values.

:func:`option` makes such a field. The same declaration serves every place that needs the option: a
training option is a :class:`~superloss.bench.config.RunConfig` field, from which the command line
and the presets are derived; a task's, protocol's or method's options are a small frozen dataclass of
them, parsed once (:func:`parse`) into a typed object, with the checks that :func:`check` derives
from the declaration. The command line adds each as ``--NAME`` (:func:`add_arguments`).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

T = TypeVar("T")

# Where a RunConfig field comes from on the command line.
FLAG = "flag"  # its own --name option
SWEPT = "swept"  # an axis of the sweep (--methods, --noise, --seeds)
NOT_ON_CLI = "none"  # the command's name, or options of their own (--METHOD-PARAM, task options)


@dataclass(frozen=True)
class Grid:
    """The values ``superloss tune`` tries for a hyper-parameter, and where they come from.

    The grids of one method are zipped, not crossed: its i-th grid point takes the i-th value of
    each hyper-parameter that declares a grid (SCE's (α, β) pairs), so they have one length.
    ``paper_default`` is the value that wins a tie on the validation score (None: the option's
    default). A value of a ``Literal`` member of the option's type (SuperLoss's ``lam="auto"``) is
    a mode, never a grid value: it is run and reported untuned.
    """

    values: tuple[Any, ...]
    source: str
    paper_default: Any = None


@dataclass(frozen=True)
class Spec:
    """What :func:`option` records about a field (its ``metadata["spec"]``)."""

    help: str
    choices: tuple[Any, ...] | None = None  # the valid values (for strings: the only ones)
    low: float | None = None  # numbers: the smallest valid value (excluded if low_open)
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    cli: str = FLAG
    per_dataset: bool = False  # the command line's default comes from the dataset (presets.py)
    metavar: str | None = None
    grid: Grid | None = None  # what ``superloss tune`` tries (hyper-parameters of methods)


def option(
    default: Any,
    help: str,
    *,
    choices: tuple[Any, ...] | None = None,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    cli: str = FLAG,
    per_dataset: bool = False,
    metavar: str | None = None,
    grid: Grid | None = None,
) -> Any:
    """A dataclass field declaring one option: its default, a one-line help, its valid values.

    A mutable default (a dict) is copied for each instance. Numbers are checked against
    ``low``/``high`` (``*_open``: the bound itself is invalid) and must be finite. A type with a
    ``Literal`` member takes those words besides its other types (``float | Literal["auto"]``).
    ``grid``: the values a tuning sweep tries, with their source.
    """
    spec = Spec(help, choices, low, high, low_open, high_open, cli, per_dataset, metavar, grid)
    if isinstance(default, dict):
        return dataclasses.field(default_factory=lambda: dict(default), metadata={"spec": spec})
    return dataclasses.field(default=default, metadata={"spec": spec})


@dataclass(frozen=True)
class Option:
    """One declared option: its field name, type, default and :class:`Spec`."""

    name: str
    type: Any
    default: Any
    spec: Spec

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def check(self, value: Any, owner: str = "", *, label: str | None = None) -> None:
        """ValueError, one line naming the option and what it takes, unless ``value`` is valid.

        The option is named ``label`` if given, else ``owner name`` (a method's hyper-parameter:
        ``gce q``), else its flag (``--epochs``).
        """
        label = label or (f"{owner} {self.name}" if owner else self.flag)
        if not _has_type(value, self.type):
            if self.words() and _takes_numbers(self.type):  # a number or a word (SuperLoss's lam)
                raise ValueError(f"{label} must be {self.allowed()}, got {value!r}")
            raise ValueError(f"{label} must be {_describe(self.type)}, got {value!r}")
        spec = self.spec
        if spec.choices is not None and isinstance(value, str) and value not in spec.choices:
            if _takes_numbers(self.type):  # a number or a word (SuperLoss's tau, lam)
                raise ValueError(f"{label} must be {self.allowed()}, got {value!r}")
            choices = ", ".join(map(str, spec.choices))
            if owner or label != self.flag:
                raise ValueError(f"{label} must be one of {choices}, got {value!r}")
            raise ValueError(
                f"unknown {self.name.replace('_', ' ')} {value!r}; expected one of {choices}"
            )
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            words = self.words()
            _check_range(value, spec, label, self.type, f" or {_one_of(words)}" if words else "")

    def words(self) -> list[str]:
        """The words the option takes: its string choices, and its type's ``Literal`` members."""
        words = [str(c) for c in self.spec.choices or () if isinstance(c, str)]
        return words + [word for word in literal_values(self.type) if word not in words]

    def allowed(self) -> str:
        """What the option takes, in words: ``a number > 0 or auto``, ``one of sgd, adam``."""
        words = self.words()
        numbers = _number_range(self.spec, self.type) if _takes_numbers(self.type) else ""
        if words and numbers:
            return (
                f"{numbers} or {words[0]}" if len(words) == 1 else f"{_one_of(words)}, or {numbers}"
            )
        return _one_of(words) if words else numbers or _describe(self.type)


def options_of(cls: type[Any]) -> list[Option]:
    """The declared options of a dataclass, in field order (fields without :func:`option` too)."""
    hints = typing.get_type_hints(cls)
    found = []
    for item in dataclasses.fields(cls):
        if item.default is not dataclasses.MISSING:
            default = item.default
        elif item.default_factory is not dataclasses.MISSING:
            default = item.default_factory()
        else:
            default = None
        spec = item.metadata.get("spec", Spec(help=""))
        found.append(Option(item.name, hints[item.name], default, spec))
    return found


def defaults_of(cls: type[Any]) -> dict[str, Any]:
    return {item.name: item.default for item in options_of(cls)}


def parse(cls: type[T], values: Mapping[str, Any], owner: str, *, noun: str = "option") -> T:
    """``cls`` (a dataclass of options) from ``values``, defaults filling the rest.

    ValueError on an unknown name or an invalid value, saying which. ``owner`` names whose options
    they are. Options (``noun="option"``) are named by their command-line flag in messages
    (``--folds must be …``); anything else by owner and name (``gce q must be …``).
    """
    declared = options_of(cls)
    names = [item.name for item in declared]
    unknown = set(values) - set(names)
    if unknown:
        if noun == "option":
            what = f"unknown {owner} option(s) {sorted(unknown)}"
        else:
            what = f"unknown {noun}(s) {sorted(unknown)} for {owner}"
        raise ValueError(f"{what}; expected {sorted(names)}")
    for item in declared:
        if item.name in values:
            item.check(values[item.name], "" if noun == "option" else owner)
    return cls(**values)


def literal_values(annotation: Any) -> tuple[Any, ...]:
    """The words of the ``Literal`` members of ``annotation`` (``("auto",)``), in order."""
    return tuple(
        word
        for member in _members(annotation)
        if typing.get_origin(member) is Literal
        for word in typing.get_args(member)
    )


def _has_type(value: Any, annotation: Any) -> bool:
    if isinstance(value, str) and value in literal_values(annotation):
        return True
    for kind in _members(annotation):
        if kind is Any or kind is object:
            return True
        if kind is type(None) and value is None:
            return True
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return True
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return True
        if kind in (str, bool, dict) and isinstance(value, kind):
            return True
    return False


def _members(annotation: Any) -> Iterator[Any]:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for member in typing.get_args(annotation):
            yield from _members(member)
    elif origin is Literal:
        yield annotation  # whole, with its words
    else:
        yield origin or annotation


def _describe(annotation: Any) -> str:
    words = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    parts = [
        words.get(m, "None" if m is type(None) else getattr(m, "__name__", str(m)))
        for m in _members(annotation)
        if typing.get_origin(m) is not Literal  # its words are listed apart
    ]
    return " or ".join(parts)


def _takes_numbers(annotation: Any) -> bool:
    return any(kind in (int, float) for kind in _members(annotation))


def _one_of(words: Any) -> str:
    words = [str(word) for word in words]
    return words[0] if len(words) == 1 else f"one of {', '.join(words)}"


def _number_range(spec: Spec, annotation: Any) -> str:
    """``an integer >= 1``, ``a number > 0``, ``in (0, 1]``, or ``a number`` without bounds."""
    kind = (
        "an integer"
        if int in _members(annotation) and float not in _members(annotation)
        else "a number"
    )
    if spec.low is not None and spec.high is not None:
        return f"in {'(' if spec.low_open else '['}{spec.low:g}, {spec.high:g}{')' if spec.high_open else ']'}"
    if spec.low is not None:
        return f"{kind} {'>' if spec.low_open else '>='} {spec.low:g}"
    if spec.high is not None:
        return f"{kind} {'<' if spec.high_open else '<='} {spec.high:g}"
    return kind


def _check_range(value: float, spec: Spec, label: str, annotation: Any, or_words: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{label} must be a finite number{or_words}, got {value!r}")
    low_ok = spec.low is None or (value > spec.low if spec.low_open else value >= spec.low)
    high_ok = spec.high is None or (value < spec.high if spec.high_open else value <= spec.high)
    if not (low_ok and high_ok):
        raise ValueError(
            f"{label} must be {_number_range(spec, annotation)}{or_words}, got {value!r}"
        )


def value_type(annotation: Any) -> Any:
    """The type a command-line value converts to: the annotation's member other than None."""
    return next(member for member in _members(annotation) if member is not type(None))


def add_arguments(
    parser: argparse.ArgumentParser | Any,
    cls: type[Any],
    *,
    defaults: bool = True,
    dest: Callable[[Option], str] = lambda item: item.name,
) -> None:
    """Add ``--NAME`` for each option of ``cls``: ``store_true`` for a flag, argparse choices for a
    string with choices. ``defaults=False``: the default is None (only given options are kept)."""
    for item in options_of(cls):
        if item.type is bool:
            parser.add_argument(
                item.flag,
                dest=dest(item),
                action="store_true",
                default=False if defaults else None,
                help=item.spec.help,
            )
            continue
        parser.add_argument(
            item.flag,
            dest=dest(item),
            type=value_type(item.type),
            choices=item.spec.choices,
            default=item.default if defaults else None,
            metavar=item.spec.metavar,
            help=f"{item.spec.help} (default {item.default})".replace("%", "%%"),
        )
