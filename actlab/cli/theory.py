"""actlab-theory: mean-field signal propagation for one activation and initialisation.

Takes the overrides actlab-train takes for the activation (`activation=<name>` picks
configs/activation/<name>.yaml, `activation.<param>=<v>` sets a parameter,
`activation.name=pkg.mod:fn` an importable function) and the weight and bias variances
`init.sigma_w2` and `init.sigma_b2` (Var w = sigma_w2 / fan_in, Var b = sigma_b2), or an
init scheme (`init=he`, with `init.gain`) whose variance it takes for equal layer widths.
Prints actlab.theory.summary as a table (or JSON) and can draw the phase diagram.

In --json output an infinite value is the string "inf" (xi_c and the trainable depth on the
edge of chaos) and an undefined one is null (the critical sigma_w2 where there is none).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

from actlab.cli.checks import config_dir, readme, unknown_key
from actlab.errors import UserError

PROG = "actlab-theory"
DEFAULT_SIGMA_W2 = 1.0  # where the activation has no critical sigma_w2 at the given sigma_b2

# (summary key, row label, meaning): the table's rows
ROWS = (
    ("q_star", "q*", "fixed point of the pre-activation variance q_l (forward signal length)"),
    ("c_star", "c*", "fixed point of two inputs' correlation (1: they end up aligned)"),
    ("chi1", "chi_1", "per-layer factor of the squared gradient norm: < 1 vanishing, "
                      "> 1 exploding"),
    ("chi_c", "chi_c", "slope of the correlation map at c*: how fast correlations settle"),
    ("xi_q", "xi_q", "layers over which q_l settles to q*"),
    ("xi_c", "xi_c", "layers over which two inputs' correlation settles to c* (information "
                     "depth)"),
    ("critical_sigma_w2", "critical sigma_w^2", "sigma_w^2 with chi_1 = 1 at this sigma_b^2 "
                                                "(edge of chaos)"),
    ("phase", "phase", "ordered (chi_1 < 1), critical (= 1) or chaotic (> 1)"),
    ("trainable_depth", "trainable depth", "about 6 xi_c: deeper networks stop training "
                                           "(Schoenholz et al. 2017)"),
)


def _fail(msg: str) -> NoReturn:
    print(f"{PROG}: error: {msg}", file=sys.stderr)
    raise SystemExit(2)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Mean-field signal propagation (Poole et al. 2016, Schoenholz et al. 2017) "
                    "for one activation in a wide fully connected network at initialisation, "
                    "weights N(0, sigma_w2 / fan_in) and biases N(0, sigma_b2): the fixed "
                    "points q* and c*, chi_1 and chi_c, the depth scales xi_q and xi_c, the "
                    "critical sigma_w2 (edge of chaos), the phase and the trainable depth "
                    "(about 6 xi_c). sigma_w2 defaults to the critical value for the given "
                    "sigma_b2 where one exists, else to 1.0; sigma_b2 to 0. Overrides as for "
                    "actlab-train: activation=NAME, activation.PARAM=VALUE, "
                    "activation.name=pkg.mod:fn, init.sigma_w2=V, init.sigma_b2=V, and "
                    "init=SCHEME (he: sigma_w2 = 2 gain^2; lecun, and glorot and orthogonal "
                    "for equal widths: gain^2; critical: gain^2 times the critical value) "
                    "with init.gain=G.",
        epilog="examples:\n"
               "  actlab-theory activation=tanh init.sigma_b2=0.05    # critical sigma_w2\n"
               "  actlab-theory activation=relu init.sigma_w2=1.5     # ordered relu net\n"
               "  actlab-theory activation=selu init=lecun            # as actlab-train inits\n"
               "  actlab-theory activation=leaky_relu activation.alpha=0.2 --json\n"
               "  actlab-theory activation=tanh init.sigma_w2=2.5 --plot phase.png\n"
               "  actlab-theory activation.name=mypkg.acts:my_fn       # an importable phi\n\n"
               "--json: one object; infinite values are the string \"inf\", undefined ones "
               "null.\n"
               f"documentation: {readme()}")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="activation=NAME, activation.PARAM=V, init.sigma_w2=V, init.sigma_b2=V, "
                        "init=SCHEME, init.gain=G")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--plot", metavar="PNG",
                   help="draw the phase diagram (xi_c over sigma_w2 x sigma_b2, edge of chaos, "
                        "the chosen point) to PNG")
    p.add_argument("--grid", type=int, default=32, metavar="N",
                   help="phase diagram cells along sigma_w2 (default 32; 3/4 as many along "
                        "sigma_b2); the time grows with N^2")
    return p


def _default_activation(cfg_dir: Path) -> str:
    """The activation configs/config.yaml's defaults list picks (relu)."""
    import yaml

    for entry in (yaml.safe_load((cfg_dir / "config.yaml").read_text()) or {}).get("defaults", []):
        if isinstance(entry, dict) and "activation" in entry:
            return str(entry["activation"])
    return "relu"


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """The activation (name, params) and init (sigma_w2, sigma_b2, scheme, gain) overrides.

    Group choices apply first, then keys, as in Hydra. sigma_w2 is None unless given; scheme
    is the `init=<name>` choice, if any. Every bad override ends the program with one line on
    stderr and exit code 2.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    cfg_dir = config_dir()
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as e:  # Hydra's grammar errors carry a second line with a link
        _fail(f"{str(e).splitlines()[0]} in {' '.join(overrides)}")
    options = {g: sorted({p.stem for p in (cfg_dir / g).glob("*.yaml")} | extra)
               for g, extra in (("activation", set()), ("init", {"critical"}))}
    choice: dict[str, Any] = {"activation": _default_activation(cfg_dir), "init": None}
    keys = []
    for ov in parsed:
        if ov.is_sweep_override():
            _fail(f"{ov.input_line}: one value per key (sweeps are for actlab-train -m)")
        group = ov.key_or_group
        if group in choice:
            if not isinstance(ov.value(), str) or ov.value() not in options[group]:
                _fail(f"unknown {group} '{ov.value()}'; choose from: "
                      f"{', '.join(options[group])}"
                      + (" (or activation.name=pkg.mod:fn)" if group == "activation" else ""))
            choice[group] = ov.value()
        else:
            keys.append(ov)
    tree: dict[str, Any] = {"activation": _yaml(cfg_dir / "activation" / f"{choice['activation']}"
                                                ".yaml"),
                            "init": {"sigma_w2": None, "sigma_b2": 0.0}}
    if choice["init"]:
        tree["init"] = {**tree["init"], **_yaml(cfg_dir / "init" / f"{choice['init']}.yaml")}
    for ov in keys:
        parts = ov.key_or_group.split(".")
        node = tree.get(parts[0]) if len(parts) == 2 else None
        new = ov.is_add() or ov.is_force_add()
        if not isinstance(node, dict) or (parts[1] not in node and not
                                           (new and parts[0] == "activation")):
            _fail(unknown_key(tree, ov.key_or_group))
        if ov.is_delete():
            node.pop(parts[1])
        else:
            node[parts[1]] = ov.value()
    act, var = tree["activation"], tree["init"]
    for k, lo in (("sigma_w2", "> 0"), ("sigma_b2", ">= 0"), ("gain", "> 0")):
        v = var.get(k)
        ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        if v is not None and not (ok and (v > 0 or (v == 0 and lo == ">= 0"))):
            _fail(f"init.{k} must be a number {lo}, got {v!r}")
    if choice["init"] == "critical" and var.get("sigma_w2") is not None:
        _fail("init=critical derives sigma_w2 from the activation; leave init.sigma_w2 out")
    name = act.pop("name", choice["activation"])
    if not isinstance(name, str):
        _fail(f"activation.name must be a name or pkg.mod:fn, got {name!r}")
    from actlab import activations

    try:
        activations.spec(name, **act)
    except UserError as e:
        _fail(str(e))
    w = var.get("sigma_w2")
    return {"name": name, "params": act, "sigma_w2": None if w is None else float(w),
            "sigma_b2": float(var.get("sigma_b2") or 0.0), "scheme": choice["init"],
            "gain": float(var.get("gain", 1.0))}


def _yaml(path: Path) -> dict[str, Any]:
    import yaml

    if not path.is_file():  # init=critical without its config file: the variances only
        return {}
    tree = yaml.safe_load(path.read_text()) or {}
    return dict(tree) if isinstance(tree, dict) else {}


def _scheme_sigma_w2(scheme: str, activation: str) -> tuple[float, str]:
    """Var w * fan_in of an init scheme at gain 1 (equal fan-in and fan-out), with a note."""
    from actlab import activations

    if scheme == "auto":
        base = activations.recommended_init(activation) if activation in activations.names() \
            else "he"
        w, note = _scheme_sigma_w2(base, activation)
        return w, f"init=auto ({note.removeprefix('init=')})"
    from actlab.models import initializers as init

    notes = {"glorot": ", equal fan-in and fan-out", "orthogonal": ", square layers"}
    return init.square_sigma_w2(scheme), f"init={scheme}{notes.get(scheme, '')}"


def compute(name: str, params: dict, sigma_w2: float | None = None, sigma_b2: float = 0.0, *,
            scheme: str | None = None, gain: float = 1.0) -> dict[str, Any]:
    """theory.summary with where sigma_w2 came from and, if there is none, why no critical one.

    sigma_w2 (times gain^2) wins; else an init scheme's variance (he 2, lecun 1, glorot and
    orthogonal 1 for equal widths, critical: the critical value), times gain^2; else the
    critical value, or DEFAULT_SIGMA_W2 where there is none.
    """
    from actlab import theory

    try:
        crit, note = theory.critical_sigma_w2(name, sigma_b2, params=params), None
    except UserError as e:
        crit, note = math.nan, str(e)
    g2 = f" x gain^2 = {gain ** 2:g}" if gain != 1 else ""
    if sigma_w2 is not None:
        w, source = gain ** 2 * sigma_w2, "init.sigma_w2" + g2
    elif scheme not in (None, "critical"):
        w, source = _scheme_sigma_w2(scheme, name)
        w, source = gain ** 2 * w, source + g2
    elif note is None:
        w, source = gain ** 2 * crit, ("init=critical" + g2 if scheme else "critical")
    elif scheme:
        _fail(f"init=critical: {note}")
    else:
        w, source = DEFAULT_SIGMA_W2, "default (no critical point)"
    try:
        out = theory.summary(name, w, sigma_b2, params=params)
    except UserError as e:
        _fail(str(e))
    return {"activation": name, "params": params, **out, "sigma_w2_from": source,
            "critical_sigma_w2": crit, "no_critical_point": note}


def jsonable(v: Any) -> Any:
    """Valid JSON values: +-inf as the strings "inf" and "-inf", NaN as null."""
    if isinstance(v, dict):
        return {k: jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [jsonable(x) for x in v]
    if isinstance(v, float):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else v
    return v


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "none" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) \
            else f"{v:.6g}"
    return str(v)


def _print_table(res: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    params = ", ".join(f"{k}={v}" for k, v in res["params"].items())
    label = f"{res['activation']}({params})" if params else res["activation"]
    table = Table(title=f"mean-field theory: {label}, sigma_w^2 = {res['sigma_w2']:.6g}, "
                        f"sigma_b^2 = {res['sigma_b2']:.6g}")
    for col in ("quantity", "value", "meaning"):
        table.add_column(col)
    for key, row, meaning in ROWS:
        table.add_row(row, _fmt(res[key]), meaning)
    console = Console(width=120)
    console.print(table)
    b, src = res["sigma_b2"], res["sigma_w2_from"]
    why = (res["no_critical_point"] or "").split(": ", 1)[-1]
    if src == "critical":
        console.print(f"sigma_w^2 = {res['sigma_w2']:.6g}: the critical value for sigma_b^2 = "
                      f"{b:.6g} (init.sigma_w2=V sets another)", soft_wrap=True, highlight=False)
    elif src.startswith("default"):
        console.print(f"sigma_w^2 = {res['sigma_w2']:.6g}, the default: no critical point at "
                      f"sigma_b^2 = {b:.6g}: {why}", soft_wrap=True, highlight=False)
    else:
        console.print(f"sigma_w^2 = {res['sigma_w2']:.6g}: from {src}", soft_wrap=True,
                      highlight=False)
        if why:
            console.print(f"no critical point at sigma_b^2 = {b:.6g}: {why}", soft_wrap=True,
                          highlight=False)


def theory_main(argv: list[str] | None = None) -> None:
    """actlab-theory: the mean-field summary for an activation and init (table or JSON)."""
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    args = _parser().parse_args(argv)
    if args.grid < 2:
        _fail(f"--grid must be at least 2, got {args.grid}")
    for noisy in ("jax", "absl"):  # backend-probing chatter, not the user's business
        logging.getLogger(noisy).setLevel(logging.WARNING)
    choice = parse_overrides(args.overrides)
    name, params, sigma_b2 = choice["name"], choice["params"], choice["sigma_b2"]
    res = compute(name, params, choice["sigma_w2"], sigma_b2, scheme=choice["scheme"],
                  gain=choice["gain"])
    if args.json:
        print(json.dumps(jsonable(res), allow_nan=False))
    else:
        _print_table(res)
    if args.plot:
        from actlab.analysis.plots import theory as plots_theory
        from actlab.analysis.plots.style import offscreen, savefig

        try:
            with offscreen():
                fig = plots_theory.phase_diagram(name, res["sigma_w2"], sigma_b2, params=params,
                                                 resolution=args.grid)
                savefig(fig, args.plot)
        except OSError as e:
            _fail(f"cannot write {args.plot}: {e.strerror or e}")
        print(f"wrote {args.plot}", file=sys.stderr if args.json else sys.stdout)


if __name__ == "__main__":
    theory_main()
