"""actlab's performance figures, measured side by side in one invocation.

    python -m benchmarks.run            # every figure (about 15 minutes on a 2-core CPU)
    python -m benchmarks.run --quick    # tiny sizes: checks that every figure still runs
    python -m benchmarks.run --only 1,3 # some figures

Figures 1-9 are here; 10-12 (seeds per program, float32/bfloat16 utilisation, data
parallel) are in benchmarks/scaling.py and size themselves to the device; 13 (language-model
tokens/s against PyTorch eager and torch.compile) is in benchmarks/lm.py.

Prints a table of ratios against their targets and writes it, with the command
and a description of the machine, to benchmarks/RESULTS.md (not with --quick,
unless --out is given). Figures 3, 4 and 13 also measure the PyTorch loops a researcher
would write instead (benchmarks/peers.py: eager with hooks, torch.compile, the
torch.func ensemble; benchmarks/lm.py: a nanoGPT-style loop); without PyTorch
(`pip install torch==2.13.0`) their rows say skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from actlab import sinks as writers  # noqa: E402
from actlab.config import Config  # noqa: E402
from actlab.config.sections import METRICS  # noqa: E402
from actlab.engine import cadence as schedule
from actlab.engine import experiment
from actlab.engine import loop as program
from actlab.runs import driver as train
from actlab.sinks.local import LocalWriter  # noqa: E402
from benchmarks import peers  # noqa: E402

ROOT = Path(__file__).resolve().parent
NOTES = "<!-- analysis: kept when the table is regenerated -->"


@dataclass
class Row:
    figure: str
    measured: str
    ratio: float | None
    target: str
    ok: bool | None
    note: str = ""


def config(base: dict | None = None, **sections) -> Config:
    """A Config from `base` then `sections`, each merged one level deep."""
    d: dict = {"logger": {"progress": False, "sinks": ["local"]},
               "train": {"eval_every": 0, "target": None}}
    for src in (base or {}, sections):
        for k, v in src.items():
            d.setdefault(k, {}).update(v)
    return Config.from_dict(d)


def timed_run(cfg: Config) -> dict:
    """train.run into a temporary directory; the summary (train_seconds: after compiling)."""
    with tempfile.TemporaryDirectory() as tmp:
        return train.run(cfg, tmp, progress=False)


def steps_per_s(cfg: Config, repeats: int = 2) -> float:
    """Best of `repeats` runs: steps / seconds spent training (compile excluded)."""
    return max(cfg.train.steps / timed_run(cfg)["train_seconds"] for _ in range(repeats))


# --------------------------------------------------------------------------- #
# Helpers of several figures.

def peak_matmul_flops(n: int, dtype=jnp.float32, repeats: int = 20,
                      precision: str = "highest") -> float:
    """Best FLOP/s of an n x n x n product of random `dtype` matrices at `precision`
    (train.matmul_precision's meaning)."""
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    a, b = jax.random.normal(k1, (n, n), dtype), jax.random.normal(k2, (n, n), dtype)

    def product(a, b):
        with jax.default_matmul_precision(precision):
            return a @ b

    f = jax.jit(product)
    jax.block_until_ready(f(a, b))
    best = 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(f(a, b))
        best = max(best, 2 * n ** 3 / (time.perf_counter() - t))
    return best


def mnist1d_mlp_step_flops(width: int, depth: int, batch: int) -> float:
    """Matmul FLOPs of one training step of an MLP on MNIST-1D (40 inputs, 10 classes):
    forward 2, backward 4 per multiply-add."""
    d_in, c = 40, 10
    macs = d_in * width + (depth - 1) * width * width + width * c
    return 6 * batch * macs


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


class RssSink(writers.NullWriter):
    """Samples this process's resident memory at every log step."""

    def __init__(self):
        self.samples: list[float] = []

    def write_records(self, records):
        self.samples.append(rss_mb())


# --------------------------------------------------------------------------- #
# The figures.

def fig1(q: bool) -> list[Row]:
    steps = 200 if q else 4000
    base = {"model": {"depth": 8, "width": 64}, "train": {"steps": steps, "batch_size": 128}}
    on = steps_per_s(config(base, train={"log_every": 10}))
    off = steps_per_s(config(base, train={"log_every": steps, "metrics": "none"}))
    r = on / off
    prof = measured_step_cost(lambda metrics: config(
        base, train={"log_every": 10, "metrics": metrics}), q)
    rows = [Row("1 instrumentation: all metrics @ log_every=10 vs off (d8 w64 b128)",
                f"{on:.0f} vs {off:.0f} steps/s", r, ">= 0.90", r >= 0.90, prof)]
    no_ranks = [m for m in METRICS if m not in ("erank", "srank")]
    for label, extra in (("probe_size=128 @ log_every=10", {"log_every": 10, "probe_size": 128}),
                         ("default probe @ log_every=50", {"log_every": 50}),
                         ("every family but erank/srank (the per-layer SVDs) @ log_every=10",
                          {"log_every": 10, "metrics": no_ranks})):
        v = steps_per_s(config(base, train=extra))
        rows.append(Row(f"1 variant: {label}", f"{v:.0f} vs {off:.0f} steps/s", v / off,
                        "(report)", None))
    return rows


def measured_step_cost(cfg_with: Callable[[Any], Config], quick: bool = False) -> str:
    """Profile: one instrumented step in units of a plain step, per metric family
    (`cfg_with(metrics)` the configuration with those families)."""
    out = []
    families = [("all", "all"), ("params", ["grad_norm", "weight_norm", "update_ratio"]),
                ("delta", ["delta_norm"]),
                ("acts", ["act_mean", "act_std", "dead_frac", "sat_frac"]),
                ("signal", ["q", "c"]), ("ranks", ["erank", "srank"]),
                ("rest", ["dormant_frac", "weight_mag", "preact_drift"]), ("none", "none")]
    if quick:  # the smoke only checks that the profile runs
        families = [families[0], families[-1]]
    for label, metrics in families:
        exp = experiment.build(cfg_with(metrics))
        d, names = experiment.device_data(exp), program.measurement_names(exp)
        chunk = program.make_program(exp, 1)

        def plan(n, names=names):  # one measured step (no eval, no probe) then n plain steps
            return program.plan_arrays(schedule.Call((schedule.Slot(0, n, True, {}),)), 1,
                                       names)

        box = [chunk(experiment.initial_state(exp), d, plan(0))[0]]  # compile; state donated

        def clock(n, reps, chunk=chunk, d=d, box=box, plan=plan):
            best = 1e9  # steady state: each call continues the state the last one returned
            for _ in range(reps):
                jax.block_until_ready(box[0])
                t = time.perf_counter()
                box[0] = jax.block_until_ready(chunk(box[0], d, plan(n))[0])
                best = min(best, time.perf_counter() - t)
            return best

        one, many = (clock(0, 5), clock(99, 2)) if quick else (clock(0, 100), clock(999, 3))
        plain = (many - one) / (99 if quick else 999)
        out.append(f"{label} {one / plain:.1f}")
    # the floor any instrumented step pays: its own training step plus the probe's forward
    st = jax.tree.map(lambda a: a[0], experiment.initial_state(exp))
    fwd = jax.jit(lambda p, ms, x: exp.model.apply(p, ms, x)[0])
    jax.block_until_ready(fwd(st.params, st.model_state, d["x_fixed"]))
    probe = min(timeit.repeat(lambda: jax.block_until_ready(
        fwd(st.params, st.model_state, d["x_fixed"])), number=1, repeat=50))
    return (f"instrumented step = N plain steps: {', '.join(out)}; the probe forward alone "
            f"({d['x_fixed'].shape[0]} examples) = {probe / plain:.1f}")


def fig2(q: bool) -> Row:
    steps = 200 if q else 4000
    cfg = config(model={"depth": 8, "width": 64},
                 train={"steps": steps, "batch_size": 128, "log_every": steps,
                        "metrics": "none"})
    ours = steps_per_s(cfg)
    bare = peers.bare_jax_steps_per_s(8, 64, 128, steps, 0.01)
    r = ours / bare
    return Row("2 uninstrumented step vs minimal JAX lax.scan loop", f"{ours:.0f} vs {bare:.0f} "
               "steps/s", r, ">= 0.90", r >= 0.90)


def fig3(q: bool) -> list[Row]:
    rows = []
    for depth in (8, 32):
        steps = 100 if q else (3000 if depth == 8 else 1500)
        ours = steps_per_s(config(model={"depth": depth, "width": 64},
                                  train={"steps": steps, "batch_size": 128, "log_every": 10,
                                         "metrics": ["grad_norm", "dead_frac"]}))
        target = ">= 5x" if depth == 8 else "(report)"
        label = f"3 vs PyTorch eager + hooks (grad norms, dead frac @10), depth {depth}"
        try:
            pt = peers.hooked_steps_per_s(depth, 64, 128, steps, 10, 0.01)
        except peers.Skipped as e:
            rows.append(Row(label, f"skipped: {e}", None, target, None))
            continue
        r = ours / pt
        rows.append(Row(label, f"{ours:.0f} vs {pt:.0f} steps/s", r, target,
                        r >= 5 if depth == 8 else None))
        if depth == 8:  # the ceiling: the minimal JAX loop of figure 2, no metrics at all
            bare = peers.bare_jax_steps_per_s(depth, 64, 128, steps, 0.01)
            rows.append(Row("3 reference: minimal JAX loop (no metrics) vs the same PyTorch",
                            f"{bare:.0f} vs {pt:.0f} steps/s", bare / pt, "(report)", None))
        rows.append(compiled_peer(depth, steps, ours, q))
    return rows


def compiled_peer(depth: int, steps: int, ours: float, q: bool) -> Row:
    """Figure 3's PyTorch loop under torch.compile, against the same actlab run; the
    compile time is reported apart from the steady-state steps it is excluded from."""
    label = f"3 vs PyTorch torch.compile of the same loop, depth {depth}"
    if q and depth != 8:  # the smoke compiles one depth: a compile takes about a minute
        return Row(label, "skipped: --quick compiles depth 8 only", None, "(report)", None)
    try:
        pc, compile_s = peers.compiled_steps_per_s(depth, 64, 128, steps, 10, 0.01)
    except peers.Skipped as e:
        return Row(label, f"skipped: {e}", None, "(report)", None)
    return Row(label, f"{ours:.0f} vs {pc:.0f} steps/s", ours / pc, "(report)", None,
               f"torch.compile: {compile_s:.0f} s compiling, not counted")


def fig4(q: bool) -> list[Row]:
    rows = []
    n = 4 if q else 16
    for width, depth in ((16, 2), (64, 4)):
        steps = 50 if q else 2000
        base = {"model": {"depth": depth, "width": width},
                "train": {"steps": steps, "batch_size": 64, "log_every": 50}}
        # both programs compiled once beforehand, so both sides find them in the persistent
        # cache (as every job of a sweep after the first does)
        timed_run(config(base, train={"seeds": n}))
        timed_run(config(base, train={"seed": 0}))
        t = time.perf_counter()
        timed_run(config(base, train={"seeds": n}))
        together = time.perf_counter() - t
        t = time.perf_counter()
        for s in range(n):
            timed_run(config(base, train={"seed": s}))
        apart = time.perf_counter() - t
        r = apart / together
        target = ">= 4x" if width == 16 else "(report)"
        rows.append(Row(f"4 {n} seeds vmapped vs {n} sequential runs, width {width} depth "
                        f"{depth}", f"{together:.1f} s vs {apart:.1f} s", r, target,
                        r >= 4 if width == 16 else None,
                        "wall time incl. setup and cached compile"))
    return rows + ensemble_peer(q)


def ensemble_peer(q: bool) -> list[Row]:
    """The n-seed program against PyTorch's own ensembling of the same n MLPs (4x64 on
    MNIST-1D, Adam, batch 128 each, each member its own batches), in member-steps per
    second after compiling: actlab with its default metrics every 100 steps, PyTorch
    training only; and the n-seed program's matmul FLOP/s against the measured peak."""
    n, steps = (4, 100) if q else (16, 2000)
    width, depth, batch, every = 64, 4, 128, 100
    cfg = config(model={"depth": depth, "width": width}, dataset={"name": "mnist1d"},
                 train={"steps": steps, "batch_size": batch, "seeds": n, "log_every": every})
    ours = n * steps_per_s(cfg)
    label = (f"4 {n} seeds in one program (metrics @{every}) vs PyTorch torch.func ensemble "
             f"(stack_module_state + functional_call + vmap), MLP {depth}x{width} MNIST-1D "
             f"b{batch}")
    try:
        pt = peers.ensemble_member_steps(n, width, depth, batch, steps, 0.01)
        rows = [Row(label, f"{ours:.0f} vs {pt:.0f} member-steps/s", ours / pt, ">= 2x",
                    ours / pt >= 2, "PyTorch: training only, one Adam over the stacked "
                    "parameters")]
    except peers.Skipped as e:
        rows = [Row(label, f"skipped: {e}", None, ">= 2x", None)]
    peak = peak_matmul_flops(512 if q else 2048)
    flops = mnist1d_mlp_step_flops(width, depth, batch) * ours
    rows.append(Row(f"4 utilisation: the {n}-seed program above vs measured matmul peak",
                    f"{flops / 1e9:.1f} vs {peak / 1e9:.1f} GFLOP/s", flops / peak,
                    "(report)", None, "training matmuls only (the metrics' not counted)"))
    return rows


def fig5(q: bool) -> Row:
    width, batch, depth = (256, 128, 4) if q else (1024, 512, 4)
    steps = 20 if q else 300
    peak = peak_matmul_flops(512 if q else 2048)
    cfg = config(model={"depth": depth, "width": width}, dataset={"name": "mnist1d"},
                 train={"steps": steps, "batch_size": batch, "log_every": steps,
                        "metrics": "none", "probe_size": 64})
    sps = steps_per_s(cfg)
    flops = mnist1d_mlp_step_flops(width, depth, batch) * sps
    r = flops / peak
    return Row(f"5 utilisation: MLP w{width} b{batch} d{depth} vs measured matmul peak",
               f"{flops / 1e9:.1f} vs {peak / 1e9:.1f} GFLOP/s", r, ">= 0.50", r >= 0.5)


def fig6(q: bool) -> Row:
    times = {}
    jax.config.update("jax_enable_compilation_cache", False)
    try:
        for depth in (4, 16, 64):
            cfg = config(model={"depth": depth, "width": 64}, train={"steps": 10})
            exp = experiment.build(cfg)
            state, d = experiment.initial_state(exp), experiment.device_data(exp)
            names = program.measurement_names(exp)
            plan = program.plan_arrays(schedule.Call((schedule.Slot(
                0, 0, True, dict.fromkeys(names, True)),)), 1, names)
            t = time.perf_counter()
            chunk = program.make_program(exp, 1).lower(state, d, plan).compile()
            jax.block_until_ready(chunk(state, d, plan))
            times[depth] = time.perf_counter() - t
    finally:
        jax.config.update("jax_enable_compilation_cache", True)
    r = times[64] / times[4]
    return Row("6 first-step latency (compile) depth 64 / depth 4",
               " ".join(f"d{k}: {v:.2f}s" for k, v in times.items()), r, "<= 2", r <= 2)


ACTS12 = ["relu", "leaky_relu", "elu", "selu", "gelu", "swish", "mish", "softplus", "tanh",
          "sigmoid", "softsign", "hard_tanh"]


def fig7(q: bool) -> tuple[Row, float]:
    acts = ACTS12[:2] if q else ACTS12
    depths, seeds, steps = ("2",) if q else ("2", "8", "32"), 2 if q else 4, 50 if q else 2000
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [str(Path(sys.executable).parent / "actlab-train"), "-m",
               f"activation={','.join(acts)}", f"model.depth={','.join(depths)}",
               f"train.seeds={seeds}", f"train.steps={steps}", "dataset=mnist1d",
               "train.log_every=50", "train.eval_every=500", "logger.progress=false",
               f"hydra.sweep.dir={tmp}"]
        t = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t
        if p.returncode:
            raise RuntimeError(p.stderr[-2000:])
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        sums = [json.loads(f.read_text()) for f in Path(tmp).glob("*/summary.json")]
    comp = sum(s["compile_seconds"] for s in sums)
    run_s = sum(s["train_seconds"] for s in sums)
    jobs = len(sums)
    note = (f"{jobs} jobs: compile {comp:.0f} s, training {run_s:.0f} s, rest (start-up, data, "
            f"logging) {wall - comp - run_s:.0f} s; peak RSS {peak:.0f} MB")
    return Row(f"7 study {len(acts)} acts x {len(depths)} depths x {seeds} seeds, MNIST-1D, "
               f"{steps} steps, CLI -m", f"{wall / 60:.1f} min", wall / 600, "<= 10 min",
               wall <= 600, note), peak


def fig8(q: bool) -> Row:
    code = ("import resource, tempfile\nfrom actlab import train\nfrom actlab.config import "
            "Config\nwith tempfile.TemporaryDirectory() as t:\n"
            "    train.run(Config.from_dict({'logger': {'progress': False}}), t)\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)\n")
    default_peak = float(subprocess.run([sys.executable, "-c", code], capture_output=True,
                                        text=True, check=True).stdout.split()[-1])
    steps = 2000 if q else 20000
    sink = RssSink()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = config(train={"steps": steps, "log_every": 50})
        train.run(cfg, tmp, progress=False, sinks=[LocalWriter(tmp), sink])
    s = sink.samples
    growth = s[-1] - s[len(s) // 5]
    return Row("8 memory: default run peak RSS; growth over a long run (20%..100%)",
               f"{default_peak:.0f} MB; {growth:+.1f} MB over {steps} steps", None,
               "no growth", abs(growth) < 20, f"{len(s)} samples, {s[len(s)//5]:.0f} MB at 20%")


PROBE_SETTINGS = {  # each probe at its defaults, measured on the 512-example probe batch
    "hessian": {"k": 3, "iters": 20, "samples": 8},
    "gsnr": {"chunk": 64}, "noise_scale": {"chunk": 64}, "weights": {}}


def fig9(q: bool) -> list[Row]:
    """Each probe's cost per call, in training steps of the same run without probes."""
    steps, every = (40, 10) if q else (400, 10)
    base = {"model": {"depth": 4, "width": 64}, "dataset": {"name": "digits"},
            "train": {"steps": steps, "batch_size": 128, "log_every": every,
                      "metrics": "none"}}
    t_plain = 1.0 / steps_per_s(config(base))
    rows = []
    # the smoke (--quick) only checks that the figure runs: the cheapest probe
    chosen = list(PROBE_SETTINGS.items())[-1:] if q else PROBE_SETTINGS.items()
    for name, settings in chosen:
        t = 1.0 / steps_per_s(config(base, probes={name: {"every": every, **settings}}))
        calls = steps // every
        cost = (t - t_plain) * steps / calls / t_plain
        rows.append(Row(f"9 probe cost: {name}", f"{cost:.1f} training steps per call",
                        cost, "measured", None,
                        f"MLP 4x64, digits, batch 128, probe batch 512; {settings or ''}"))
    return rows


# --------------------------------------------------------------------------- #

def machine() -> str:
    dev = jax.devices()[0]
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores ({cpu}), "
            f"jax {jax.__version__} on {dev.platform} ({dev.device_kind}), Python "
            f"{platform.python_version()}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes (CI smoke)")
    p.add_argument("--only", help="comma-separated figure numbers, e.g. 1,3")
    p.add_argument("--out", help="markdown file to write (default: benchmarks/RESULTS.md, "
                                 "none with --quick)")
    args = p.parse_args(argv)
    train.enable_compilation_cache()
    from benchmarks import lm, scaling

    figures = {1: fig1, 2: fig2, 3: fig3, 4: fig4, 5: fig5, 6: fig6, 7: fig7, 8: fig8, 9: fig9,
               10: scaling.fig10, 11: scaling.fig11, 12: scaling.fig12, 13: lm.fig13,
               14: lm.fig14}
    only = {int(x) for x in args.only.split(",")} if args.only else set(figures)
    rows: list[Row] = []
    for k in sorted(only):
        t = time.perf_counter()
        out = figures[k](args.quick)
        if k == 7:
            out = out[0]
        new = out if isinstance(out, list) else [out]
        rows += new
        for r in new:
            print(f"[{time.perf_counter() - t:6.1f} s] {r.figure}: {r.measured}"
                  + (f" (ratio {r.ratio:.2f})" if r.ratio is not None else ""), flush=True)
    table = render(rows)
    print(table)
    out = args.out or (None if args.quick else str(ROOT / "RESULTS.md"))
    if out:
        cmd = "python -m benchmarks.run " + " ".join(argv if argv is not None else sys.argv[1:])
        old = Path(out).read_text() if Path(out).exists() else ""
        notes = old[old.index(NOTES):] if NOTES in old else ""  # hand-written analysis kept
        Path(out).write_text(f"# actlab benchmark results\n\nCommand: `{cmd.strip()}`\n\n"
                             f"Machine: {machine()}\n\n{table}\n\n{notes}")
        print(f"wrote {out}")
    return 0 if all(r.ok is not False for r in rows) or args.quick else 1


def render(rows: list[Row]) -> str:
    lines = ["| figure | measured | ratio | target | met | note |", "|---|---|---|---|---|---|"]
    for r in rows:
        ok = {True: "yes", False: "**no**", None: "-"}[r.ok]
        ratio = f"{r.ratio:.2f}" if r.ratio is not None else "-"
        lines.append(f"| {r.figure} | {r.measured} | {ratio} | {r.target} | {ok} | {r.note} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
