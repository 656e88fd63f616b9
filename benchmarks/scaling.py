"""Figures 10-12: how far one device goes, and past one device.

10  members scaling: n seeds trained together (vmapped, one compiled program) against n
    sequential single-seed runs, from 1 seed up to 1024 on an accelerator (64 on a CPU).
11  utilisation in float32 and bfloat16 (`train.dtype`) against the device's own measured
    matrix-multiply peak in the same dtype.
12  data-parallel scaling (`train.shard=batch`) over the local devices, when there are
    several; a single-device host reports it as not measurable.

Sizes follow the device: a GPU gets the sizes its figures are meant for, a CPU small ones.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp

from benchmarks.run import (
    Row,
    config,
    mnist1d_mlp_step_flops,
    peak_matmul_flops,
    steps_per_s,
    timed_run,
)

ACCELERATOR = jax.default_backend() != "cpu"


def fig10(q: bool) -> list[Row]:
    """Seeds per program: wall time of one n-seed run against n one-seed runs."""
    steps = 50 if q else 1000
    sizes = (1, 4) if q else ((1, 4, 16, 64, 256, 1024) if ACCELERATOR else (1, 4, 16, 64))
    base = {"model": {"depth": 4, "width": 64}, "dataset": {"name": "digits"},
            "train": {"steps": steps, "batch_size": 128, "log_every": 50,
                      "eval_every": 250, "member_loop": "vmap"}}
    timed_run(config(base, train={"seed": 0}))  # compiled once: later runs find it cached
    one = []
    for s in range(2 if q else 4):  # a sequential run's wall time, setup included
        t = time.perf_counter()
        timed_run(config(base, train={"seed": s}))
        one.append(time.perf_counter() - t)
    t1 = sum(one) / len(one)
    rows = []
    for n in sizes:
        cfg = config(base, train={"seeds": n})
        timed_run(cfg)  # compile
        t = time.perf_counter()
        summary = timed_run(cfg)
        wall = time.perf_counter() - t
        r = n * t1 / wall
        member_steps = n * steps / summary["train_seconds"]
        rows.append(Row(
            f"10 members: {n} seeds vmapped vs {n} sequential runs (MLP 4x64, digits, "
            f"{steps} steps, metrics @50)",
            f"{wall:.2f} s vs {n * t1:.1f} s", r, "(report)", None,
            f"{member_steps:,.0f} member-steps/s; sequential = {n} x {t1:.2f} s (mean of "
            f"{len(one)} single-seed runs, setup included)"))
    return rows


def fig11(q: bool) -> list[Row]:
    """Training FLOP/s of a wide MLP against the measured matmul peak, per dtype."""
    if q:
        width, batch, depth, steps, n = 128, 64, 3, 20, 256
    elif ACCELERATOR:
        width, batch, depth, steps, n = 4096, 2048, 4, 500, 8192
    else:
        width, batch, depth, steps, n = 1024, 512, 4, 300, 2048
    rows = []
    for dtype, jdt, prec in (("float32", jnp.float32, "highest"),
                             ("float32", jnp.float32, "default"),
                             ("bfloat16", jnp.bfloat16, "highest")):
        peak = peak_matmul_flops(n, jdt, precision=prec)
        cfg = config(model={"depth": depth, "width": width}, dataset={"name": "mnist1d"},
                     train={"steps": steps, "batch_size": batch, "log_every": steps,
                            "eval_every": 0, "metrics": "none", "probe_size": 64,
                            "dtype": dtype, "matmul_precision": prec})
        sps = steps_per_s(cfg)
        flops = mnist1d_mlp_step_flops(width, depth, batch) * sps
        r = flops / peak
        label = dtype if dtype != "float32" else f"float32 ({prec} precision)"
        rows.append(Row(
            f"11 utilisation {label}: MLP w{width} b{batch} d{depth} vs the measured matmul "
            "peak at the same setting", f"{flops / 1e12:.2f} vs {peak / 1e12:.2f} TFLOP/s", r,
            ">= 0.50", r >= 0.5, f"{sps:.0f} steps/s; peak: {n}^3 product"))
    return rows


def fig12(q: bool) -> list[Row]:
    """Steps/s of one large-batch run on every local device against one device."""
    devices = jax.local_devices()
    if len(devices) < 2:
        return [Row("12 data parallel (train.shard=batch)", f"{len(devices)} device: not "
                    "measurable", None, "(report)", None)]
    steps = 20 if q else 300
    base = {"model": {"depth": 4, "width": 1024 if ACCELERATOR else 256},
            "dataset": {"name": "mnist1d"},
            "train": {"steps": steps, "batch_size": 4096 if ACCELERATOR else 512,
                      "log_every": 50, "eval_every": 0}}
    one = steps_per_s(config(base, train={"shard": "none"}))
    many = steps_per_s(config(base, train={"shard": "batch"}))
    r = many / one
    return [Row(f"12 data parallel: batch split over {len(devices)} devices vs one",
                f"{many:.0f} vs {one:.0f} steps/s", r, "(report)", None,
                f"ideal {len(devices)}x")]
