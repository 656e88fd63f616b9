"""An Optuna study as a Hydra sweeper: Optuna searches, the configured launcher runs the trials.

Trials are asked from the study (ask/tell), launched n_jobs at a time through
Hydra's launcher with trial number == job number (job directory
`<sweep dir>/<trial number>`), and told the job's return value, or FAIL when
the job failed, diverged or returned no finite value. The study lives in
persistent storage (default `sqlite:///<sweep dir>/optuna.db`), so running the
same command again finishes the study: the sweep ends once the study holds
`n_trials` finished trials (complete, pruned or failed). A trial left running
by a killed sweep is launched again with the same number, parameters and
directory (the engine resumes its run directory) unless `on_running=fail`.
"""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path
from typing import Any

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.core.plugins import Plugins
from hydra.core.utils import JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from actlab.errors import UserError
from hydra_plugins.actlab_sweepers import common

log = logging.getLogger(__name__)
RESULTS_FILE = "optimization_results.yaml"
DB_FILE = "optuna.db"
_PRIMITIVE = (str, int, float, bool, type(None))


class SearchSpaceError(UserError):
    pass


def distribution(override: Override) -> tuple[Any, list[str] | None]:
    """An Optuna distribution for one swept override, and its choices as override text.

    choice(a, b) and a,b: categorical; range(a, b, s): integers a, a+s, ... below b
    (categorical for floats); interval(a, b): uniform float; tag(log, ...): log
    scale; tag(int, interval(a, b)): integers a..b.
    """
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    v, key = override.value(), override.get_key_element()
    tags = set(getattr(v, "tags", ()) or ())
    if isinstance(v, IntervalSweep):
        if "int" in tags:
            return IntDistribution(int(v.start), int(v.end), log="log" in tags), None
        return FloatDistribution(float(v.start), float(v.end), log="log" in tags), None
    if isinstance(v, RangeSweep) and all(isinstance(x, int) for x in (v.start, v.stop, v.step)) \
            and v.step > 0 and v.stop > v.start:
        last = v.start + (v.stop - 1 - v.start) // v.step * v.step
        return IntDistribution(v.start, last, log="log" in tags and v.step == 1,
                               step=v.step), None
    if isinstance(v, (ChoiceSweep, RangeSweep)):
        texts = list(override.sweep_string_iterator())
        values = [x if isinstance(x, _PRIMITIVE) else t
                  for x, t in zip(override.sweep_iterator(), texts, strict=True)]
        return CategoricalDistribution(values), texts
    raise SearchSpaceError(f"{key}: cannot search over {override.input_line}")


def _text(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)


class OptunaSweeper(Sweeper):
    """Hydra sweeper over an Optuna study (see the module docstring)."""

    def __init__(self, sampler: Any = None, direction: str = "maximize", storage: str | None = None,
                 study_name: str | None = None, n_trials: int = 20, n_jobs: int = 1,
                 params: dict[str, str] | None = None, on_running: str = "resume") -> None:
        if direction not in ("maximize", "minimize"):
            raise ValueError(f"hydra.sweeper.direction must be maximize or minimize, "
                             f"got {direction!r}")
        if on_running not in ("resume", "fail"):
            raise ValueError(f"hydra.sweeper.on_running must be resume or fail, got {on_running!r}")
        self.sampler, self.direction, self.storage = sampler, direction, storage
        self.study_name = study_name or "actlab"
        self.n_trials, self.n_jobs = int(n_trials), max(1, int(n_jobs))
        self.params = dict(params or {})
        self.on_running = on_running
        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None
        self.launcher = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    # ----------------------------------------------------------------------- #

    def _space(self, arguments: list[str]) -> tuple[list[str], dict[str, Override]]:
        """Fixed overrides of every job, and the searched ones (the command line wins)."""
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        fixed: dict[str, str] = {}
        space: dict[str, Override] = {}
        lines = [f"{k}={v}" for k, v in self.params.items()] + list(arguments)
        for ov in parser.parse_overrides(lines):
            key = ov.get_key_element()
            fixed.pop(key, None)
            space.pop(key, None)
            if ov.is_sweep_override():
                space[key] = ov
            else:
                fixed[key] = ov.input_line
        return list(fixed.values()), space

    def _sampler(self) -> Any:
        from hydra.utils import instantiate

        s = self.sampler
        if s is None:
            from optuna.samplers import TPESampler

            return TPESampler()
        return instantiate(s) if isinstance(s, (dict, DictConfig)) else s

    def _study(self, storage: str) -> Any:
        import optuna

        return optuna.create_study(storage=storage, sampler=self._sampler(),
                                   study_name=self.study_name, direction=self.direction,
                                   load_if_exists=True)

    def sweep(self, arguments: list[str]) -> Any:
        from optuna.trial import TrialState

        assert self.config is not None and self.launcher is not None
        fixed, space = self._space(arguments)
        try:
            dists = {k: distribution(ov) for k, ov in space.items()}
        except SearchSpaceError as e:
            print(f"actlab-train: error: {e}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        fixed_texts = {ov.partition("=")[0]: ov.partition("=")[2] for ov in fixed}
        common.check_definition(sweep_dir, {
            "sweeper": "optuna",
            "overrides": {**fixed_texts, **{k: common.value_text(ov) for k, ov in space.items()},
                          "hydra.sweeper.direction": self.direction,
                          "hydra.sweeper.study_name": self.study_name},
        })
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        storage = self.storage or f"sqlite:///{sweep_dir.absolute() / DB_FILE}"
        study = self._study(storage)
        finished = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        stale = list(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
        if stale and self.on_running == "fail":
            for t in stale:
                study.tell(t.number, state=TrialState.FAIL)
            log.info(f"Marked {len(stale)} trial(s) left running as failed: "
                     f"{[t.number for t in stale]}")
            stale = []
        elif stale:
            log.info(f"Resuming {len(stale)} trial(s) left running: {[t.number for t in stale]}")
        done = len(study.get_trials(deepcopy=False, states=finished))
        where = storage if self.storage is None else "hydra.sweeper.storage"
        log.info(f"Study {self.study_name} in {where}: {done} of {self.n_trials} trials finished")
        returns = []
        while done < self.n_trials:
            want = min(self.n_jobs, self.n_trials - done)
            batch = [(t.number, dict(t.params)) for t in stale[:want]]
            stale = stale[want:]
            while len(batch) < want:
                t = study.ask({k: d for k, (d, _) in dists.items()})
                batch.append((t.number, dict(t.params)))
            results = self._launch(batch, fixed, dists)
            returns.append(results)
            for (num, params), r in zip(batch, results, strict=True):
                value = self._value(r)
                if value is None:
                    study.tell(num, state=TrialState.FAIL, skip_if_finished=True)
                else:
                    study.tell(num, value, skip_if_finished=True)
                log.info(f"Trial {num} {'failed' if value is None else f'value {value:.6g}'}: "
                         f"{params}")
            done = len(study.get_trials(deepcopy=False, states=finished))
        self._report(study, sweep_dir)
        common.write_summary(sweep_dir)
        return returns

    def _overrides(self, params: dict[str, Any], fixed: list[str],
                   dists: dict[str, tuple[Any, list[str] | None]]) -> list[str]:
        out = list(fixed)
        for key, value in params.items():
            dist, texts = dists.get(key, (None, None))
            if texts is not None and value in dist.choices:
                out.append(f"{key}={texts[dist.choices.index(value)]}")
            else:
                out.append(f"{key}={_text(value)}")
        return out

    def _launch(self, batch: list[tuple[int, dict[str, Any]]], fixed: list[str],
                dists: dict[str, Any]) -> list[Any]:
        """Launch the trials, each as the job numbered like it (contiguous runs launch together)."""
        order = sorted(range(len(batch)), key=lambda i: batch[i][0])
        results: dict[int, Any] = {}
        run: list[int] = []
        for i in order + [None]:
            if run and (i is None or batch[i][0] != batch[run[-1]][0] + 1):
                jobs = [self._overrides(batch[j][1], fixed, dists) for j in run]
                self.validate_batch_is_legal(jobs)
                for j, r in zip(run, self.launcher.launch(jobs, initial_job_idx=batch[run[0]][0]),
                                strict=True):
                    results[j] = r
                run = []
            if i is not None:
                run.append(i)
        return [results[i] for i in range(len(batch))]

    @staticmethod
    def _value(r: Any) -> float | None:
        if r.status != JobStatus.COMPLETED:
            return None
        try:
            v = float(r.return_value)
        except (TypeError, ValueError):
            return None
        return v if math.isfinite(v) else None

    def _report(self, study: Any, sweep_dir: Path) -> None:
        from optuna.trial import TrialState

        counts = {s.name.lower(): len(study.get_trials(deepcopy=False, states=(s,)))
                  for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
        results: dict[str, Any] = {"name": "optuna", "study_name": self.study_name,
                                   "direction": self.direction, "trials": counts}
        try:
            best = study.best_trial
        except ValueError:  # no trial completed
            results.update(best_value=None, best_params={}, best_trial=None)
            print(f"Optuna: no trial of {self.study_name} completed ({counts})", flush=True)
        else:
            results.update(best_value=best.value, best_params=dict(best.params),
                           best_trial=best.number)
            print(f"Best value: {best.value} (trial {best.number})\n"
                  f"Best params: {dict(best.params)}", flush=True)
        (sweep_dir / RESULTS_FILE).write_text(yaml.safe_dump(results, sort_keys=False))
