"""One generic validator: config fields declare their default and rule once.

`field(default, lo=..., choices=..., parse=...)` puts the rule in the dataclass
field's metadata; `section(cls, name, mapping)` reads a mapping against a
dataclass: unknown keys refused, every given value checked by its rule, defaults
from the class. Every failure is a ConfigError with a one-line message naming the
key, the bad value and what is accepted.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from actlab.errors import UserError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

_D = TypeVar("_D", bound="DataclassInstance")


class ConfigError(UserError):
    """A user error in the configuration (one line, no traceback needed)."""


def field(default: Any = dataclasses.MISSING, *, lo: float | None = None,
          hi: float | None = None, lo_open: bool = False, hi_open: bool = False,
          choices: tuple | Callable[[], Any] | None = None,
          parse: Callable[[str, Any], Any] | None = None,
          factory: Callable[[], Any] | None = None) -> Any:
    """A config field: its default and the rule its values obey (range, choices, parser)."""
    meta = {"lo": lo, "hi": hi, "lo_open": lo_open, "hi_open": hi_open, "choices": choices,
            "parse": parse}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def as_int(key: str, v: Any, lo: float | None = None,
           error: type[UserError] = ConfigError) -> int:
    """`v` as an integer >= lo (a float with no fraction passes), else one-line `error`."""
    if isinstance(v, bool) or not isinstance(v, int):
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        else:
            raise error(f"{key} must be an integer, got {v!r}")
    if lo is not None and v < lo:
        raise error(f"{key} must be >= {lo:g}, got {v}")
    return v


def as_float(key: str, v: Any, lo: float | None = None, lo_open: bool = False,
             hi: float | None = None, hi_open: bool = False,
             error: type[UserError] = ConfigError) -> float:
    """`v` as a float in the given (open or closed) range, else one-line `error`."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise error(f"{key} must be a number, got {v!r}")
    v = float(v)
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise error(f"{key} must be {'>' if lo_open else '>='} {lo:g}, got {v:g}")
    if hi is not None and (v > hi or (hi_open and v == hi)):
        raise error(f"{key} must be {'<' if hi_open else '<='} {hi:g}, got {v:g}")
    return v


def choice(key: str, v: Any, options: Iterable[Any],
           error: type[UserError] = ConfigError) -> Any:
    """`v` if it is one of `options`, else one-line `error` listing them."""
    options = list(options)
    if v not in options:
        raise error(f"unknown {key} '{v}'; choose from: {', '.join(map(str, options))}")
    return v


def as_bool(key: str, v: Any) -> bool:
    """`v` as a bool ('true'/'false' strings pass), else a ConfigError."""
    if isinstance(v, str) and v.lower() in ("true", "false"):
        return v.lower() == "true"
    if not isinstance(v, bool):
        raise ConfigError(f"{key} must be true or false, got {v!r}")
    return v


def no_extra(sec: str, given: Mapping[str, Any], known: Iterable[str]) -> None:
    """Refuse keys of `given` not in `known`: one line with the closest valid key."""
    extra = sorted(set(given) - set(known))
    if extra:
        tree: dict[str, Any] = dict.fromkeys(known)
        for part in reversed(sec.split(".")):  # probes.hessian -> {probes: {hessian: ...}}
            tree = {part: tree}
        raise ConfigError(unknown_key(tree, f"{sec}.{extra[0]}"))


def mapping(d: Mapping[str, Any], name: str) -> dict[str, Any]:
    v = d.get(name) or {}
    if not isinstance(v, Mapping):
        raise ConfigError(f"'{name}' must be a mapping, got {v!r}")
    return dict(v)


def _value(key: str, f: dataclasses.Field, v: Any) -> Any:
    """Validate one value against its field's declared type and rule."""
    meta = f.metadata
    if meta.get("parse"):
        return meta["parse"](key, v)
    choices = meta.get("choices")
    if choices is not None:
        return choice(key, v, choices() if callable(choices) else choices)
    if f.type in ("int", int):
        return as_int(key, v, meta.get("lo"))
    if f.type in ("float", float):
        return as_float(key, v, meta.get("lo"), bool(meta.get("lo_open")), meta.get("hi"),
                      bool(meta.get("hi_open")))
    if f.type in ("bool", bool):
        return as_bool(key, v)
    return v


def section(cls: type[_D], name: str, given: Mapping[str, Any], **resolved: Any) -> _D:
    """An instance of dataclass `cls` from `given`: unknown keys refused, every field
    validated by its rule, defaults from the class; `resolved` fields are set as given."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in resolved}
    no_extra(name, {k: v for k, v in given.items() if k not in resolved}, fields)
    values = {k: _value(f"{name}.{k}", f, given[k]) for k, f in fields.items() if k in given}
    return cls(**values, **resolved)




def reject_unknown(kind: str, name: str, given: Iterable[str], accepted: Iterable[str],
                   error: type[UserError] = ConfigError) -> None:
    """Raise `error` (one line) naming the parameters in `given` that `kind` `name` lacks."""
    accepted = sorted(accepted)
    extra = sorted(set(given) - set(accepted))
    if extra:
        raise error(f"{kind} '{name}' has no parameter {', '.join(extra)}; "
                    f"accepted: {', '.join(accepted) or 'none'}")


# --------------------------------------------------------------------------- #
# Unknown keys (one checker: the config's sections and the command line's overrides)

def present(tree: Any, parts: list[str]) -> bool:
    """Whether the key path `parts` exists in the nested mapping (or list) `tree`."""
    for p in parts:
        if isinstance(tree, dict) and p in tree:
            tree = tree[p]
        elif isinstance(tree, list) and p.isdigit() and int(p) < len(tree):
            tree = tree[int(p)]
        else:
            return False
    return True


def leaves(tree: Any, prefix: str = "") -> list[str]:
    """Every leaf key path of a nested mapping, dotted."""
    if not isinstance(tree, dict) or not tree:
        return [prefix[:-1]] if prefix else []
    return [leaf for k, v in tree.items() for leaf in leaves(v, f"{prefix}{k}.")]


def _fixes(tree: Any, parts: list[str]) -> list[list[str]]:
    """The valid key paths closest to `parts`, matched component by component."""
    if not parts:
        return [[]]
    if not isinstance(tree, dict):
        return []
    heads = [parts[0]] if parts[0] in tree else difflib.get_close_matches(
        parts[0], [str(k) for k in tree], n=3, cutoff=0.7)
    return [[h, *tail] for h in heads for tail in _fixes(tree[h], parts[1:])][:3]


def unknown_key(tree: dict, key: str, where: str = "") -> str:
    """One line on `key` missing from `tree`: the closest valid keys, else the section's keys."""
    parts = key.split(".")
    fixes = [".".join(f) for f in _fixes(tree, parts)]
    if not fixes:  # misplaced (model.lr, hessian.every) rather than misspelled
        same = [p for p in leaves(tree) if p.rsplit(".", 1)[-1] == parts[-1]]
        fixes = sorted(same, key=lambda p: -difflib.SequenceMatcher(None, key, p).ratio())[:3]
    msg = f"unknown key {key}{where}"
    if fixes:
        return f"{msg}; did you mean {' or '.join(fixes)}?"
    node, i = tree, 0
    while i < len(parts) - 1 and isinstance(node.get(parts[i]), dict):
        node, i = node[parts[i]], i + 1
    if i < len(parts) - 1 and parts[i] in node:
        return f"{msg}; {'.'.join(parts[:i + 1])} is a value, not a section"
    section = f"keys of {'.'.join(parts[:i])}" if i else "top-level keys"
    return f"{msg}; valid {section}: {', '.join(sorted(map(str, node)))}"
