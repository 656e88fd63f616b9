"""Command-line entry points; the entry layer (this package) is the only one importing Hydra.

actlab-train          Hydra app: compose configs/, validate, train, print the run dir.
actlab-activations    table of the registry (and a grid of phi, phi' with --plot).
actlab-report         figures and report.html for a run or sweep directory.
actlab-sample         a trained causal model's continuation of a prompt (actlab.cli.sample).
"""


import argparse
import logging
import os
import sys
from pathlib import Path
from typing import NoReturn, cast

from actlab.cli.checks import (
    GROUPS,
    _fail,
    check_group_choices,
    check_keys,
    check_output_dir,
    config_dir,
    readme,
    unknown_key,
)
from actlab.cli.plugins import register_plugins
from actlab.errors import UserError

__all__ = ["GROUPS", "check_group_choices", "check_keys", "check_output_dir", "config_dir",
           "readme", "unknown_key", "run_job", "objective", "train_main", "activations_main",
           "report_main", "quote_targets", "JobFailed"]

class JobFailed(Exception):
    """A multirun job stopped by a user error; Hydra reports it and runs the other jobs."""


def run_job(cfg: dict, run_dir: Path, label: str = "", multirun: bool = False) -> dict:
    """Validate a composed config and train it in `run_dir`.

    A user error ends a single run with one line and exit code 2. In a multirun
    it marks this job failed (summary.json status "failed" with the message) and
    raises JobFailed, which Hydra records while it goes on with the other jobs.
    """
    from actlab.config import Config
    from actlab.engine.resolve import resolve
    from actlab.errors import UserError
    from actlab.runs import driver

    def fail(msg: str) -> NoReturn:
        if not multirun:
            _fail(msg)
        print(f"actlab-train: error: {msg}", file=sys.stderr, flush=True)
        from actlab.files import SUMMARY_FILE, write_json_atomic

        try:
            write_json_atomic(run_dir / SUMMARY_FILE, {"config": cfg, "status": "failed",
                                                       "error": msg, "seeds": []})
        except OSError:
            pass
        raise JobFailed(msg)

    try:
        config = resolve(Config.from_dict(cfg))
    except UserError as e:
        fail(str(e))
    for noisy in ("jax", "absl", "orbax"):  # backend-probing chatter, not the user's business
        logging.getLogger(noisy).setLevel(logging.WARNING)
    print(f"run directory: {run_dir}", flush=True)
    driver.enable_compilation_cache()
    try:
        return driver.run(config, run_dir, label=label)
    except UserError as e:
        fail(str(e))  # raised before any training step


def objective(summary: dict, name: str, steps: int) -> float | None:
    """The value a sweeper optimises: the mean over members of a summary field.

    A member that never reached the target counts as steps + 1 for steps_to_target.
    """
    vals = [m.get(name) for m in summary.get("seeds", [])]
    if name == "steps_to_target":
        vals = [steps + 1 if v is None else v for v in vals]
    vals = [v for v in vals if v is not None]
    return sum(vals) / len(vals) if vals else None


TABLE_METRICS = ("grad_norm", "dead_frac", "sat_frac")


def layer_table(run_dir: Path) -> str:
    """Per hidden layer, the first and last logged grad_norm, dead_frac and sat_frac of the
    first member, as a few lines of text ('' when the run logged none of them)."""
    from actlab.files import METRICS_FILE, read_metrics

    records, _ = read_metrics(run_dir / METRICS_FILE)
    if not records:
        return ""
    # a member is its seed and its swept values (keys such as optimizer.lr)
    identity = {k: v for k, v in records[0].items()
                if k == "seed" or ("." in k and "/" not in k)}
    first_member = [r for r in records if all(r.get(k) == v for k, v in identity.items())]
    layers = sorted({int(k.rsplit("/", 1)[1]) for r in first_member for k in r
                     if k.rsplit("/", 1)[0] in TABLE_METRICS and k.rsplit("/", 1)[1].isdigit()})
    shown = [m for m in TABLE_METRICS if any(f"{m}/0" in r for r in first_member)]
    if not layers or not shown:
        return ""

    def ends(key: str) -> str:
        vals = [r[key] for r in first_member if isinstance(r.get(key), (int, float))]
        fmt = "{:.2e}" if key.startswith("grad_norm") else "{:.3f}"
        return f"{fmt.format(vals[0])} -> {fmt.format(vals[-1])}" if vals else "-"

    steps = f"steps {first_member[0]['step']} -> {first_member[-1]['step']}"
    head = f"{'layer':>5}  " + "  ".join(f"{m:>22}" for m in shown)
    rows = [f"{layer:>5}  " + "  ".join(f"{ends(f'{m}/{layer}'):>22}" for m in shown)
            for layer in layers]
    who = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
                    for k, v in identity.items())
    return "\n".join([f"per hidden layer, {who} ({steps}):", head, *rows])


def _hydra_app():
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import DictConfig, OmegaConf

    @hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
    def app(cfg: DictConfig) -> float | None:
        hc = HydraConfig.get()
        run_dir = Path(hc.runtime.output_dir)
        multirun = hc.mode is not None and hc.mode.name == "MULTIRUN"
        label = f"[job {hc.job.num}] " if multirun else ""
        try:
            # the composed config is a DictConfig: its container is a dict
            summary = run_job(cast(dict, OmegaConf.to_container(cfg, resolve=True)), run_dir,
                              label, multirun)
        finally:
            if multirun:
                from actlab.analysis import write_sweep_summary

                write_sweep_summary(hc.sweep.dir)
        steps = cfg.train.steps
        acc = objective(summary, "final_eval_acc", steps)
        print(f"{summary['status']}: final eval acc {acc if acc is None else round(acc, 4)}; "
              f"results in {run_dir}", flush=True)
        if not multirun:
            table = layer_table(run_dir)
            if table:
                print(f"{table}\ndrawn: actlab-report {run_dir}", flush=True)
        if summary.get("status") == "diverged":
            return None  # every member diverged: a sweeper records a failed trial
        return objective(summary, cfg.train.get("objective", "final_eval_acc"), steps)

    return app


def quote_targets(argv: list[str]) -> list[str]:
    """Quote `train.target=eval/acc>=0.95` for Hydra's override grammar (no quotes in shells)."""
    out = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key.lstrip("+~") == "train.target" and value[:1] not in ("'", '"'):
            arg = f"{key}='{value}'" if "," not in value else arg
        out.append(arg)
    return out


def train_main() -> None:
    """actlab-train: Hydra app over configs/."""
    from omegaconf import OmegaConf

    register_plugins()  # before check_keys composes: Hydra 1.3 misses editable plugins
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    argv = quote_targets(sys.argv[1:])
    check_group_choices(argv)
    check_output_dir(argv)
    argv = check_keys(argv)
    if {"--help", "-h"} & set(argv) and not any(a.startswith("hydra/help=") for a in argv):
        argv.append("hydra/help=actlab")  # configs/hydra/help/actlab.yaml
    OmegaConf.register_new_resolver("actlab.readme", readme, replace=True)
    sys.argv[1:] = argv
    _hydra_app()()


def parser(prog: str, description: str, examples: list[str]) -> argparse.ArgumentParser:
    """An argparse parser whose help ends with example commands and where the docs are."""
    epilog = "examples:\n" + "".join(f"  {e}\n" for e in examples) + f"\ndocumentation: {readme()}"
    return argparse.ArgumentParser(prog=prog, description=description, epilog=epilog,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def activations_main(argv: list[str] | None = None) -> None:
    """actlab-activations: print the registry as a table; --plot draws every phi and phi'."""
    from actlab import activations

    p = parser("actlab-activations",
               "Print actlab's activation registry as a table: each function's formula, output "
               "and derivative ranges, whether it is monotone, smooth, zero-centred, can die or "
               "saturates, and its parameters. With --plot, also draw every phi and phi' on one "
               "grid.",
               ["actlab-activations                   # the table",
                "actlab-activations --plot acts.png   # and the grid of phi, phi'",
                "actlab-train activation=gelu         # train with one of them"])
    p.add_argument("--plot", metavar="PNG", help="draw phi and phi' of every function to PNG")
    args = p.parse_args(argv)
    from rich.console import Console
    from rich.table import Table

    table = Table(title="actlab activation registry")
    for col in ("name", "formula", "output range", "phi' range", "monotone", "smooth",
                "zero-centred", "can die", "saturates", "params"):
        table.add_column(col)
    for name in activations.names():
        i = activations.info(name)
        table.add_row(
            name, i.formula, _rng(i.output_range), _rng(i.deriv_range), _yn(i.monotone),
            _yn(i.smooth), _yn(i.zero_centred), _yn(i.can_die), _yn(i.saturation is not None),
            ", ".join(f"{k}={v}" + (" (learnable)" if k in i.learnable else "")
                      for k, v in i.params.items()) + (" [output only]" if i.output_only else ""))
    Console(width=200).print(table)
    if args.plot:
        from actlab.analysis import plots

        plots.activation_grid(activations.names(include_output=False)).savefig(
            args.plot, dpi=120, bbox_inches="tight")
        print(f"wrote {args.plot}")


def _rng(r: tuple[float, float]) -> str:
    def f(x: float) -> str:
        return {float("inf"): "inf", float("-inf"): "-inf"}.get(x, f"{x:.4g}")

    return f"[{f(r[0])}, {f(r[1])}]"


def _yn(b: bool) -> str:
    return "yes" if b else "no"


def report_main(argv: list[str] | None = None) -> None:
    """actlab-report DIR: figures and a self-contained report.html in DIR/report/."""
    p = parser("actlab-report",
               "Turn a run directory or a sweep (multirun) directory of actlab-train into figures "
               "and one self-contained HTML page, written to DIR/report/: a comparison table, "
               "per-layer gradient-norm profiles, dead and saturated fractions, learning curves "
               "and convergence speed.",
               ["actlab-train -m activation=relu,tanh model.depth=2,8 hydra.sweep.dir=multirun/d",
                "actlab-report multirun/d                  # -> multirun/d/report/report.html",
                "actlab-report outputs/DATE/TIME --no-replay   # one run, without retraining"])
    p.add_argument("dir", help="a run directory or a sweep (multirun) directory")
    p.add_argument("--no-replay", action="store_true",
                   help="skip figures that retrain runs (distributions, decision boundaries)")
    p.add_argument("--max-replays", type=int, default=6, help="runs to replay at most")
    args = p.parse_args(argv)
    from actlab.analysis import report

    try:
        page = report.build(args.dir, replay=not args.no_replay, max_replays=args.max_replays)
    except (FileNotFoundError, UserError) as e:
        print(f"actlab-report: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"wrote {page}")
