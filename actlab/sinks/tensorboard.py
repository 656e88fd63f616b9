"""The TensorBoard sink: one TensorBoard run per member, scalars and histograms.

Written with tensorboardX (no TensorFlow): `tensorboard --logdir <run or sweep dir>`.
Per-layer keys become `<metric>/layer_<l>` tags, so TensorBoard's UI shows one panel
group per metric family; the pre-activation histograms of every hidden layer
(`preact/layer_<l>`, binned inside the compiled program at each log step when this
sink is on: `logger.histogram_bins`) are in the Histograms and Distributions tabs.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from actlab.files import clean
from actlab.sinks.base import Histograms, NullWriter, Record, Writer

_LAYER = re.compile(r"^(.+)/(\d+)$")


def tensorboard_tag(key: str, width: int = 1) -> str:
    """The TensorBoard tag of a metrics.jsonl key: `grad_norm/3` -> `grad_norm/layer_3`.

    TensorBoard puts tags with the same prefix (before the first '/') in one panel
    group, so every layer of a metric family shares a group; layer numbers are
    zero-padded to `width` digits so they sort in order. Other keys (`train/loss`,
    `eval/acc`, `grad_norm/out`, `hessian/top_eig`, `wall_time`) are kept as they are.
    """
    m = _LAYER.match(key)
    return f"{m.group(1)}/layer_{int(m.group(2)):0{width}d}" if m else key


def _member_names(members: list[dict[str, Any]]) -> list[str]:
    """TensorBoard run names: `seed=0`, or with vmapped values `lr=0.003,seed=1`."""
    def name(m: dict[str, Any], short: bool) -> str:
        parts = [f"{k.rsplit('.', 1)[-1] if short else k}={v:g}" for k, v in m.items()
                 if k != "seed" and isinstance(v, (int, float))]
        return ",".join(parts + [f"seed={m.get('seed')}"])

    names = [name(m, True) for m in members]
    return names if len(set(names)) == len(names) else [name(m, False) for m in members]


class TensorBoardWriter(NullWriter):
    """TensorBoard event files in <run dir>/tensorboard/<member>/, one TensorBoard run per member.

    Written with tensorboardX (no TensorFlow). Every numeric key of a record goes in
    as a scalar at its `step` (tags from `tensorboard_tag`), except the member's
    identity (seed and vmapped values, which name its run); non-finite values are
    left out, as metrics.jsonl holds them as null. A member's event file starts with
    a purge at its first step, so a resumed run replaces what the killed one wrote
    after the checkpoint and a fresh start replaces an earlier attempt.
    `write_histograms` adds distributions (e.g. pre-activations) per member.
    """

    DIR = "tensorboard"

    def __init__(self, run_dir: str | os.PathLike, members: list[dict[str, Any]] | None = None,
                 flush_secs: int = 30):
        import tensorboardX

        self._SummaryWriter = tensorboardX.SummaryWriter
        self.dir = Path(run_dir) / self.DIR
        self.members = list(members) if members else None
        self.names = _member_names(self.members) if self.members else None
        self.flush_secs = flush_secs
        self.width: int | None = None
        self.runs: dict[int, Any] = {}

    def _identity(self, i: int, record: Record | None) -> tuple[str, set[str]]:
        if self.names is not None and i < len(self.names):
            assert self.members is not None  # names are the members'
            return self.names[i], set(self.members[i])
        ids = {k: v for k, v in (record or {}).items()
               if k == "seed" or ("." in k and "/" not in k)}
        return (_member_names([ids])[0] if ids else f"member_{i}"), set(ids)

    def _run(self, i: int, step: int, record: Record | None = None):
        if i not in self.runs:
            name, _ = self._identity(i, record)
            # event files of one run are read in name order: the suffix orders two in a second
            self.runs[i] = self._SummaryWriter(logdir=str(self.dir / name), purge_step=int(step),
                                               flush_secs=self.flush_secs,
                                               filename_suffix=f".{time.time_ns()}")
        return self.runs[i]

    def _width(self, keys: Iterable[str]) -> int:
        """Digits of the largest layer number, fixed by the first keys with layers in them."""
        if self.width is None:
            layers = [int(m.group(2)) for k in keys if (m := _LAYER.match(k))]
            if not layers:
                return 1
            self.width = len(str(max(layers)))
        return self.width

    def write_records(self, records: list[Record]) -> None:
        for r in records:
            i, step = int(r.get("member", 0)), int(r["step"])
            _, identity = self._identity(i, r)
            run = self._run(i, step, r)
            width = self._width(r)
            for k, v in r.items():
                if k in ("step", "member") or k in identity:
                    continue
                v = clean(v)
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                    continue
                run.add_scalar(tensorboard_tag(k, width), v, step)

    def write_histograms(self, step: int, arrays: Mapping[str, Any]) -> None:
        width = self._width(arrays)
        for name, a in arrays.items():
            tag = tensorboard_tag(name, width)
            if isinstance(a, Histograms):
                for i in range(len(a.num)):
                    if a.num[i] > 0:  # a member with no finite value (diverged) draws nothing
                        e = np.asarray(a.edges[i], np.float64)
                        self._run(i, step).add_histogram_raw(
                            tag, min=float(e[0]), max=float(e[-1]), num=int(a.num[i]),
                            sum=float(a.sum[i]), sum_squares=float(a.sum_squares[i]),
                            bucket_limits=e[1:].tolist(),
                            bucket_counts=np.asarray(a.counts[i]).tolist(), global_step=step)
                continue
            a = np.asarray(a)
            for i in range(a.shape[0]):
                values = a[i].astype(np.float64).ravel()
                values = values[np.isfinite(values)]
                if values.size:
                    self._run(i, step).add_histogram(tag, values, step)

    def flush(self) -> None:
        for run in self.runs.values():
            run.flush()

    def close(self, failed: bool = False) -> None:
        for run in self.runs.values():
            run.close()
        self.runs.clear()


def make(run_dir: str | os.PathLike, *, members: list[dict[str, Any]] | None = None,
         **context: Any) -> Writer:
    """The TensorBoard sink (its runs named after the members)."""
    return TensorBoardWriter(run_dir, members=members)
