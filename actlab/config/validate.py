"""One generic validator: config fields declare their default and rule once.

`field(default, lo=..., choices=..., parse=...)` puts the rule in the dataclass
field's metadata; `section(cls, name, mapping)` reads a mapping against a
dataclass: unknown keys refused, every given value checked by its rule, defaults
from the class. Every failure is a ConfigError with a one-line message naming the
key, the bad value and what is accepted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from actlab.errors import UserError


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


def no_extra(sec: str, given: Mapping[str, Any], known) -> None:
    extra = sorted(set(given) - set(known))
    if extra:
        raise ConfigError(f"{sec} has no key {', '.join(extra)}; known: {', '.join(sorted(known))}")


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
        return as_float(key, v, meta.get("lo"), meta.get("lo_open"), meta.get("hi"),
                      meta.get("hi_open"))
    if f.type in ("bool", bool):
        return as_bool(key, v)
    return v


def section(cls, name: str, given: Mapping[str, Any], **resolved: Any):
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
