"""The Weights & Biases sink: one W&B run per member, grouped by configuration."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from actlab.sinks.base import NullWriter, Record, Writer


def wandb_mode(requested: str = "auto") -> str:
    """'online' only when asked for or when an API key is configured; never waits on a network.

    auto: WANDB_MODE if set, else online with WANDB_API_KEY or a ~/.netrc entry for
    api.wandb.ai, else offline (sync later with `wandb sync <run dir>/wandb/offline-run-*`).
    """
    if requested != "auto":
        return requested
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        import netrc

        if netrc.netrc().authenticators("api.wandb.ai"):
            return "online"
    except (OSError, netrc.NetrcParseError):
        pass
    return "offline"


class WandbWriter(NullWriter):
    """One W&B run per member (seed x vmapped grid point), grouped by configuration.

    W&B's grouping then averages a configuration's seeds. Records are logged with
    the same keys as metrics.jsonl at their `step`; the resolved config and the
    member's identity are the run config; the member's convergence summary goes
    to the run summary when final. Runs finish with exit code 1 when the run failed.
    """

    def __init__(self, run_dir: str | os.PathLike, options: Mapping[str, Any],
                 config: Mapping[str, Any], members: list[dict[str, Any]], group: str):
        import wandb

        self.wandb = wandb
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.options, self.config, self.group = dict(options), dict(config), group
        self.members = members
        self.runs: dict[int, Any] = {}
        self.mode = wandb_mode(self.options.get("mode", "auto"))

    @property
    def agent(self) -> bool:
        """Started by `wandb agent`: one run (the agent's), members' keys prefixed m<i>/."""
        return bool(os.environ.get("WANDB_SWEEP_ID"))

    def _run(self, i: int):
        if self.agent:
            if 0 not in self.runs:
                self.runs[0] = self.wandb.init(config=self.config, dir=str(self.dir),
                                               group=self.options.get("group") or self.group)
            return self.runs[0]
        if i not in self.runs:
            m = self.members[i]
            name = self.group + "".join(f" {k.split('.')[-1]}={v:g}" for k, v in m.items()
                                        if k != "seed") + f" seed={m['seed']}"
            self.runs[i] = self.wandb.init(
                project=self.options.get("project") or "actlab",
                entity=self.options.get("entity"), group=self.options.get("group") or self.group,
                tags=list(self.options.get("tags") or []), name=name, dir=str(self.dir),
                # wandb.init's annotation omits modes its Settings accept (dryrun, run: WANDB_MODE)
                config={**self.config, "member": m}, mode=self.mode,  # type: ignore[arg-type]
                reinit="create_new",
                settings=self.wandb.Settings(silent=True, console="off", x_disable_stats=True))
        return self.runs[i]

    def write_records(self, records: list[Record]) -> None:
        by_step: dict[tuple[int, int], dict[str, Any]] = {}
        for r in records:
            i = r["member"]
            logged = {k: v for k, v in r.items() if k not in ("step", "member")
                      and isinstance(v, (int, float)) and not isinstance(v, bool)}
            if self.agent and len(self.members) > 1:
                logged = {f"m{i}/{k}": v for k, v in logged.items()}
            slot = by_step.setdefault((0 if self.agent else i, int(r["step"])), {})
            slot.update(logged)
        for (i, step), logged in by_step.items():
            self._run(i).log(logged, step=step)

    def write_summary(self, summary: dict[str, Any], final: bool = False) -> None:
        if not final:
            return
        if self.agent:
            run = self._run(0)  # the sweep's metric: a mean over members
            run.summary.update({k: v["mean"] for k, v in (summary.get("aggregate") or {}).items()
                                if isinstance(v, dict) and v.get("mean") is not None})
            run.summary["status"] = summary.get("status")
            return
        for i, s in enumerate(summary.get("seeds") or []):
            run = self._run(i)
            run.summary.update({k: v for k, v in s.items() if v is not None})
            run.summary["status"] = summary.get("status")

    def close(self, failed: bool = False) -> None:
        for run in self.runs.values():
            run.finish(exit_code=1 if failed else 0)
        self.runs.clear()


def make(run_dir: str | os.PathLike, *, options: Mapping[str, Any], config: Mapping[str, Any],
         members: list[dict[str, Any]], group: str, **context: Any) -> Writer:
    """The W&B sink: `options` are logger.wandb's (project, entity, group, tags, mode)."""
    return WandbWriter(run_dir, options, config, members, group)
