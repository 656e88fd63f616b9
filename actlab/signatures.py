"""The one check behind every registry's parameters: name what is not accepted."""

from __future__ import annotations

from collections.abc import Iterable


def reject_unknown(kind: str, name: str, given: Iterable[str], accepted: Iterable[str],
                   error: type[Exception]) -> None:
    """Raise `error` (one line) naming the parameters in `given` that `kind` `name` lacks."""
    accepted = sorted(accepted)
    extra = sorted(set(given) - set(accepted))
    if extra:
        raise error(f"{kind} '{name}' has no parameter {', '.join(extra)}; "
                    f"accepted: {', '.join(accepted) or 'none'}")
