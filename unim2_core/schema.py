"""One validation engine for keyed settings: the training config, ``dataset.yaml`` and the
node's parameters.

A :class:`Field` describes one key: its type, whether null is allowed, the allowed choices, an
inclusive range and a further check; a :class:`Relation` is a rule between keys (one value
bounded by another), refused naming the key it constrains and the keys it reads. Every refusal
reads ``<key> must be <rule>, got <value>`` with the full key (``config key 'train.steps'``,
``parameter sync.slop``, ``'<path>': key 'palette'``: each caller names its keys its way), so a
user sees one style whichever file or parameter was wrong. Unknown keys are refused with the
closest known one as a suggestion.

The error class is the caller's (``ConfigError`` for configs and parameters, ``DataError`` for
a dataset's files): the engine only words the problem.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from unim2_core.errors import ConfigError, Unim2Error

Check = Callable[[Any], "str | None"]
"""A further check of an already well-typed value: the whole refusal after the key (``must
be ..., got ...``), or None when the value is allowed."""

_KIND_NAMES: Mapping[type, str] = {
    bool: "true or false",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "a list",
    dict: "a mapping",
}
_PLURAL_NAMES: Mapping[type, str] = {
    bool: "booleans",
    int: "integers",
    float: "numbers",
    str: "strings",
    list: "lists",
    dict: "mappings",
}


@dataclass(frozen=True)
class Field:
    """The rules of one key.

    Attributes:
        kind: The value's type: ``bool``, ``int``, ``float`` (integers accepted and converted),
            ``str``, ``list`` or ``dict``.
        optional: Null (None) is allowed too.
        items: For ``list``: the type every item must have (None: any).
        choices: Allowed values (empty: any of ``kind``).
        minimum: Smallest allowed number (inclusive), if limited.
        maximum: Largest allowed number (inclusive), if limited.
        check: Further check, run after the ones above (see :data:`Check`).
    """

    kind: type
    optional: bool = False
    items: type | None = None
    choices: tuple[object, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    check: Check | None = None

    def describe(self) -> str:
        """What the field accepts, as the ``<rule>`` of a refusal (``an integer or null``)."""
        if self.choices:
            rule = "one of " + ", ".join(repr(c) for c in self.choices)
        elif self.kind is list and self.items is not None:
            rule = f"a list of {_PLURAL_NAMES[self.items]}"
        else:
            rule = _KIND_NAMES[self.kind]
        return f"{rule} or null" if self.optional else rule

    def problem(self, value: object) -> str | None:
        """Why ``value`` is refused (``must be ..., got ...``), or None when it is allowed."""
        if value is None and self.optional:
            return None
        if not _has_kind(value, self.kind) or (
            self.items is not None and not all(_has_kind(item, self.items) for item in value)  # type: ignore[attr-defined]
        ):
            return f"must be {self.describe()}, got {value!r}"
        if isinstance(value, float) and not math.isfinite(value):
            return f"must be finite, got {value!r}"
        if self.choices and value not in self.choices:
            return f"must be {self.describe()}, got {value!r}"
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if self.minimum is not None and value < self.minimum:
                return f"must be >= {self.minimum}, got {value!r}"
            if self.maximum is not None and value > self.maximum:
                return f"must be <= {self.maximum}, got {value!r}"
        return None if self.check is None else self.check(value)

    def parse(self, value: object, key: str, error: type[Unim2Error] = ConfigError) -> Any:
        """``value`` checked (a float field's integer converted to float).

        Args:
            value: The given value.
            key: The key as the user knows it, with its prefix (``config key 'train.lr'``).
            error: The caller's error class.

        Raises:
            Unim2Error: of class ``error``: ``<key> must be ..., got ...``.
        """
        problem = self.problem(value)
        if problem is not None:
            raise error(f"{key} {problem}")
        if self.kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        return value


@dataclass(frozen=True)
class Relation:
    """A rule between keys: the value of ``key`` checked against the values of ``others``
    (``train.batch_size`` against ``loss.random_pairs``), for what no single :class:`Field`
    can see.

    Attributes:
        key: The key a refusal names, as the user writes it (a dotted path).
        others: The keys the rule reads besides ``key``; the refusal names them too.
        check: Called with the value of ``key``, then of each of ``others``; returns the
            refusal after the key (``must be ..., got <value of key>``), or None.
    """

    key: str
    others: tuple[str, ...]
    check: Callable[..., str | None]


def check_relations(
    value_of: Callable[[str], object],
    relations: Iterable[Relation],
    *,
    noun: str = "key",
    error: type[Unim2Error] = ConfigError,
) -> None:
    """Refuses the first broken relation, naming its key (``<noun> '<key>' must be ...``).

    Args:
        value_of: The value of a dotted key (e.g. ``operator.attrgetter(key)(config)``).
        relations: The rules, checked in order.
        noun: What a key is called in the message (``config key``).
        error: The caller's error class.

    Raises:
        Unim2Error: of class ``error``.
    """
    for relation in relations:
        values = [value_of(name) for name in (relation.key, *relation.others)]
        problem = relation.check(*values)
        if problem is not None:
            raise error(f"{noun} {relation.key!r} {problem}")


def _has_kind(value: object, kind: type) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is dict:
        return isinstance(value, Mapping)
    return isinstance(value, kind)


def unknown_key_problem(
    key: str, known: Iterable[str], noun: str = "key", *, list_known: bool = False
) -> str:
    """The refusal of an unknown ``key`` (``unknown key 'a.b' (did you mean 'c'?)``): the
    suggestion is the known name closest to the key's last part; ``list_known`` appends every
    known name (for short lists, where that helps more than a guess)."""
    allowed = list(known)
    close = difflib.get_close_matches(key.rpartition(".")[2], allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    listed = f"; known keys: {', '.join(allowed)}" if list_known else ""
    return f"unknown {noun} {key!r}{hint}{listed}"


def check_keys(
    data: Mapping[Any, object],
    known: Iterable[str],
    *,
    where: str = "",
    prefix: str = "",
    noun: str = "key",
    list_known: bool = False,
    error: type[Unim2Error] = ConfigError,
) -> None:
    """Refuses the first key of ``data`` that is not ``known``.

    Args:
        data: The given mapping.
        known: Its allowed keys.
        where: Put before the message, separator included (a file's ``'<path>': ``).
        prefix: Dotted path of ``data`` inside the whole document (``train``), for the message.
        noun: What a key is called in the message (``config key``).
        list_known: End the message with every known key.
        error: The caller's error class.

    Raises:
        Unim2Error: of class ``error``: ``<where>unknown <noun> '<prefix.key>' (did you mean
            ...?)``.
    """
    allowed = list(known)
    for name in data:
        if name not in allowed:
            path = f"{prefix}.{name}" if prefix else str(name)
            problem = unknown_key_problem(path, allowed, noun, list_known=list_known)
            raise error(f"{where}{problem}")
