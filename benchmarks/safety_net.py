"""Refactoring safety net: 15 configurations through the CLI, their records hashed.

    python -m benchmarks.safety_net record  benchmarks/safety_net.json   # before a change
    python -m benchmarks.safety_net check   benchmarks/safety_net.json   # after it

Every record of metrics.jsonl (wall_time aside) and every line of hessian_density.jsonl
is hashed per configuration; `check` names the configurations whose hashes moved. On one
machine a refactor that changes no number keeps every hash (CPU runs are bitwise
reproducible), so this is a same-machine check, not a cross-machine test.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

COMMON = ["train.steps=60", "train.log_every=10", "train.eval_every=30", "logger=none"]
CONFIGS: dict[str, list[str]] = {
    "mlp_relu": [],
    "mlp_tanh_deep_scan": ["activation=tanh", "init=glorot", "model.depth=12", "model.width=16"],
    "mlp_swiglu": ["activation=swiglu", "model.depth=3"],
    "mlp_lr_grid": ["train.seeds=2", "train.vmap.optimizer.lr=[1e-3,1e-2]"],
    "mlp_probes": ["probes.hessian.every=20", "probes.noise_scale.every=30",
                   "probes.gsnr.every=30", "probes.weights.every=30"],
    "mlp_critical_sgd": ["activation=tanh", "init=critical", "init.sigma_b2=0.05",
                         "optimizer=sgd", "optimizer.lr=0.05"],
    "mlp_dyt_warmup": ["model.norm=dyt", "optimizer=adamw", "optimizer.schedule=warmup_cosine",
                       "optimizer.warmup_steps=10", "optimizer.clip_norm=1.0"],
    "mlp_batchnorm_dropout": ["model.norm=batch", "model.dropout=0.1", "activation=gelu"],
    "mlp_mse_per_layer": ["model.loss=mse", "model.activations=[tanh,relu,sigmoid]",
                          "model.depth=3"],
    "mlp_learnable": ["activation=rational", "dataset=moons", "model.head=one_vs_all"],
    "mlp_bf16_prelu": ["activation=prelu", "train.dtype=bfloat16"],
    "cnn_digits": ["model=cnn", "dataset=digits", "model.depth=2", "train.batch_size=32"],
    "resnet_mnist1d": ["model=resnet", "model.blocks=1", "model.channels=8",
                       "dataset=mnist1d", "dataset.view=sequence", "train.batch_size=32"],
    "transformer_digits": ["model=transformer", "dataset=digits", "model.depth=2",
                           "model.dim=16", "model.heads=2", "activation=geglu"],
    "recommender": ["model=recommender", "dataset=ratings", "train.target=null"],
}


def _hash_lines(path: Path, drop: tuple[str, ...]) -> list[str]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        for key in drop:
            rec.pop(key, None)
        out.append(hashlib.sha256(json.dumps(rec, sort_keys=True).encode()).hexdigest()[:16])
    return out


def run_one(name: str) -> tuple[str, dict]:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = ["actlab-train", *COMMON, *CONFIGS[name], f"hydra.run.dir={tmp}/run"]
        env = dict(os.environ, ACTLAB_JAX_CACHE="off")
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            return name, {"error": proc.stderr.strip().splitlines()[-1:]}
        run = Path(tmp) / "run"
        return name, {
            "metrics": _hash_lines(run / "metrics.jsonl", ("wall_time",)),
            "density": _hash_lines(run / "hessian_density.jsonl", ()),
        }


def main(argv: list[str]) -> int:
    mode, path = argv[0], Path(argv[1])
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        got = dict(pool.map(run_one, CONFIGS))
    if mode == "record":
        path.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
        bad = [n for n, v in got.items() if "error" in v]
        print(f"recorded {len(got)} configurations; failed: {bad or 'none'}")
        return 1 if bad else 0
    want = json.loads(path.read_text())
    moved = [n for n in CONFIGS if got.get(n) != want.get(n)]
    for n in moved:
        print(f"MOVED {n}: {got.get(n, {}).get('error', '')}")
    print(f"{len(CONFIGS) - len(moved)}/{len(CONFIGS)} configurations bitwise unchanged")
    return 1 if moved else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
