"""Config nodes of actlab's sweepers, registered as options of Hydra's `hydra/sweeper` group.

    hydra/sweeper=basic           Hydra's default, taken over by actlab's grid sweeper: the same
                                  jobs and numbering, plus a recorded definition and fail_fast
    hydra/sweeper=actlab_grid     the same sweeper by its own name
    hydra/sweeper=actlab_optuna   an Optuna study in SQLite beside the jobs (hparams_search/)

The grid takes Hydra's `basic` name because Hydra keeps the first defaults-list
override of a group: a primary config choosing another default sweeper would
stop `+hparams_search=...` from choosing Optuna. Hydra registers its own
`basic` when it imports its core plugins, before it scans `hydra_plugins`; the
import below makes sure of that order, so this registration replaces it.
"""

from dataclasses import dataclass, field
from typing import Any

import hydra._internal.core_plugins.basic_sweeper  # noqa: F401 (registers Hydra's basic first)
from hydra.core.config_store import ConfigStore


@dataclass
class GridSweeperConf:
    _target_: str = "hydra_plugins.actlab_sweepers.grid.GridSweeper"
    # jobs handed to the launcher at once; null: all (with fail_fast: the launcher's n_jobs)
    max_batch_size: int | None = None
    # sweep definition kept in the config, e.g. {model.depth: "2,4,8"}; the command line wins
    params: dict[str, str] | None = None
    # stop launching jobs after the first failed job (jobs already running may finish)
    fail_fast: bool = False


def _tpe() -> dict[str, Any]:
    return {"_target_": "optuna.samplers.TPESampler", "seed": None}


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.actlab_sweepers.optuna_sweeper.OptunaSweeper"
    # any optuna.samplers class with its arguments
    sampler: Any = field(default_factory=_tpe)
    # maximize or minimize the value each job returns (train.objective)
    direction: str = "maximize"
    # SQLAlchemy URL of the study; null: sqlite:///<sweep dir>/optuna.db
    storage: str | None = None
    # study name within the storage; null: actlab
    study_name: str | None = None
    # finished trials (complete, pruned or failed) the study holds when the sweep ends
    n_trials: int = 20
    # trials launched together through the launcher
    n_jobs: int = 1
    # search space in Hydra's override grammar, e.g. {model.depth: "choice(2, 4, 8)"}
    params: dict[str, str] | None = None
    # trials left running by a killed sweep: resume (same number, params and directory) or fail
    on_running: str = "resume"


for _name in ("basic", "actlab_grid"):
    ConfigStore.instance().store(group="hydra/sweeper", name=_name, node=GridSweeperConf,
                                 provider="actlab")
ConfigStore.instance().store(group="hydra/sweeper", name="actlab_optuna", node=OptunaSweeperConf,
                             provider="actlab")
