"""actlab's Hydra sweepers behind a PEP 660 editable install: register_plugins() lets Hydra find
them, and changes nothing where Hydra finds them itself.

Each check runs in a fresh interpreter: Hydra's plugin registry and config store are
process-wide singletons, filled once, and this test process may have filled them already.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
GRID = "hydra_plugins.actlab_sweepers.grid.GridSweeper"
OPTUNA = "hydra_plugins.actlab_sweepers.optuna_sweeper.OptunaSweeper"
NO_SIMULATION = 77  # exit code of PROBE: this installation cannot be made to hide the plugins

# Sets up one way of reaching actlab (argv[1]), optionally calls register_plugins(), and prints
# as JSON what Hydra then knows: its sweeper classes, its hydra/sweeper options, and the sweeper
# a plain and an Optuna (+hparams_search=lr_depth) composition select.
#   hook          actlab and hydra_plugins.actlab_sweepers reachable only through a meta path
#                 finder mapping them to the checkout, as setuptools' PEP 660 editable finder
#                 does; nothing on sys.path holds hydra_plugins/actlab_sweepers
#   source        a source checkout on sys.path: Hydra's own scan finds the plugins
#   entry_points  the hook, with the plugin classes registered after Hydra's scan the way
#                 Hydra 1.4 registers those its entry points name
PROBE = r"""
import importlib.abc, importlib.util, json, pkgutil, sys
from pathlib import Path

mode, register, repo = sys.argv[1], sys.argv[2] == "register", Path(sys.argv[3])
plugin_dir = repo / "hydra_plugins" / "actlab_sweepers"

class EditableHook(importlib.abc.MetaPathFinder):
    mapping = {"actlab": repo / "actlab", "hydra_plugins.actlab_sweepers": plugin_dir}

    def find_spec(self, name, path=None, target=None):
        if name not in self.mapping:
            return None
        where = self.mapping[name]
        return importlib.util.spec_from_file_location(
            name, where / "__init__.py", submodule_search_locations=[str(where)])

# the installation's own routes to actlab: setuptools' editable finder, a checkout on sys.path
sys.meta_path[:] = [f for f in sys.meta_path if not f.__module__.startswith("__editable__")]
holding = [p for p in sys.path if (Path(p or ".") / "hydra_plugins" / "actlab_sweepers").is_dir()]
if mode == "source":
    sys.path.insert(0, str(repo))
else:
    if any((Path(p or ".") / "hydra").is_dir() for p in holding):
        sys.exit(77)  # a wheel: the plugins sit in site-packages, beside Hydra itself
    sys.path[:] = [p for p in sys.path if p not in holding]
    sys.meta_path.insert(0, EditableHook())

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper

import hydra_plugins
from actlab.cli import config_dir

if mode == "entry_points":
    plugins = Plugins.instance()  # Hydra's scan: its core plugins come first
    from hydra_plugins.actlab_sweepers import config, grid, optuna_sweeper
    for cls in (grid.GridSweeper, optuna_sweeper.OptunaSweeper):
        plugins.register(cls)
if register:  # before anything else reaches Hydra's plugins, as actlab-train calls it
    from actlab.cli.plugins import register_plugins
    register_plugins()
    register_plugins()  # a second call, as when the plugins were found already
sweepers = Plugins.instance().discover(Sweeper)

selected = {}
with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
    for name, overrides in (("plain", []), ("optuna", ["+hparams_search=lr_depth"])):
        try:
            cfg = compose("config", overrides=overrides, return_hydra_config=True)
            selected[name] = cfg.hydra.sweeper._target_
        except Exception as e:
            selected[name] = f"error: {e}"

spec = importlib.util.find_spec("hydra_plugins.actlab_sweepers")
print(json.dumps({
    "sweepers": [f"{c.__module__}.{c.__name__}" for c in sweepers],
    # a module executed twice would leave Hydra with classes its module no longer holds
    "same_classes": all(getattr(sys.modules[c.__module__], c.__name__) is c for c in sweepers),
    "options": sorted(ConfigStore.instance().list("hydra/sweeper")),
    "selected": selected,
    "listed": [m.name for m in pkgutil.iter_modules(hydra_plugins.__path__)],
    "resolved": spec.submodule_search_locations[0],
}))
"""


def probe(tmp_path: Path, mode: str, register: bool) -> dict:
    p = subprocess.run([sys.executable, "-c", PROBE, mode, "register" if register else "plain",
                        str(REPO)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    if p.returncode == NO_SIMULATION:
        pytest.skip("actlab's plugins are installed beside Hydra (a wheel): nothing to hide")
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.splitlines()[-1])


def test_hydra_alone_misses_the_sweepers_behind_an_editable_hook(tmp_path):
    # the fault itself, so that the tests below start from it: importable, not listed
    r = probe(tmp_path, "hook", register=False)
    assert r["resolved"] == str(REPO / "hydra_plugins" / "actlab_sweepers")
    assert "actlab_sweepers" not in r["listed"]
    assert GRID not in r["sweepers"] and OPTUNA not in r["sweepers"]
    assert "actlab_optuna.yaml" not in r["options"]
    assert "actlab_optuna" in r["selected"]["optuna"]  # the error names the missing option
    assert r["selected"]["plain"] == "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def test_register_plugins_finds_the_sweepers_behind_an_editable_hook(tmp_path):
    r = probe(tmp_path, "hook", register=True)
    assert "actlab_sweepers" not in r["listed"]  # still unlisted: found another way
    assert r["sweepers"].count(GRID) == 1 and r["sweepers"].count(OPTUNA) == 1
    assert r["same_classes"]
    assert {"actlab_grid.yaml", "actlab_optuna.yaml", "basic.yaml"} <= set(r["options"])
    # actlab's grid replaces Hydra's `basic`, which needs the order Hydra's own scan keeps
    assert r["selected"] == {"plain": GRID, "optuna": OPTUNA}


@pytest.mark.parametrize("mode", ["source", "entry_points"])
def test_register_plugins_changes_nothing_where_hydra_found_the_sweepers(tmp_path, mode):
    r = probe(tmp_path, mode, register=True)
    assert r["same_classes"]  # neither re-imported nor registered a second time
    assert r["sweepers"].count(GRID) == 1 and r["sweepers"].count(OPTUNA) == 1
    assert r["selected"] == {"plain": GRID, "optuna": OPTUNA}


# --------------------------------------------------------------------------- #
# A real editable install (`pip install -e`) of a copy of the checkout, in a fresh venv.

# actlab-train's entry point, after register_plugins(); once actlab.cli calls register_plugins()
# itself, the venv's own bin/actlab-train does the same
TRAIN = ("import sys\nfrom actlab.cli.plugins import register_plugins\nregister_plugins()\n"
         "from actlab.cli import train_main\nsys.argv[0] = 'actlab-train'\ntrain_main()\n")
INSTALLED = ("import json, pkgutil, actlab, hydra_plugins, hydra_plugins.actlab_sweepers as s\n"
             "print(json.dumps({'actlab': actlab.__file__, 'sweepers': s.__file__,\n"
             "                  'listed': [m.name for m in pkgutil.iter_modules("
             "hydra_plugins.__path__)]}))\n")


def fresh_env() -> dict[str, str]:
    """The environment for the new venv's processes: no PYTHONPATH to reach another actlab."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def _version(dist: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in importlib.metadata.version(dist).split(".")[:2])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return (0,)


def link_deps(site: Path, into: Path) -> None:
    """Links in `into` to everything installed in `site` but actlab itself."""
    into.mkdir(exist_ok=True)
    for entry in site.iterdir():
        name = entry.name
        if name.startswith(("actlab", "__editable__")) or (into / name).exists():
            continue
        if name == "hydra_plugins":  # Hydra's other plugins stay, actlab's sweepers go
            link_deps(entry, into / name)
            (into / name / "actlab_sweepers").unlink(missing_ok=True)
            continue
        (into / name).symlink_to(entry)


def editable_install(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the checkout, installed editable into a new venv; (venv python, copy)."""
    src = tmp_path / "src"
    for name in ("actlab", "hydra_plugins", "configs"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    env = tmp_path / "venv"
    venv.create(env, with_pip=False, symlinks=True)
    python = env / "bin" / "python"
    site = Path(subprocess.check_output(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        text=True, env=fresh_env()).strip())
    # pip and actlab's dependencies come from this environment, as plain sys.path entries
    # (their .pth files are not run), through a folder of links that leaves out this
    # environment's own actlab, whether installed as a wheel or editable
    deps = tmp_path / "deps"
    for d in dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib")):
        link_deps(Path(d), deps)
    (site / "actlab_test_deps.pth").write_text(f"{deps}\n")
    # pyproject asks for setuptools >= 77: this environment's, if it has one, else pip's
    # isolated build environment (which fetches it from PyPI)
    isolation = ["--no-build-isolation"] if _version("setuptools") >= (77,) else []
    p = subprocess.run([python, "-m", "pip", "install", "--no-deps", "--ignore-installed",
                        "--disable-pip-version-check", *isolation, "-e", str(src)],
                       capture_output=True, text=True, timeout=600, env=fresh_env())
    assert p.returncode == 0, p.stdout + p.stderr
    assert list(site.glob("__editable__*actlab*finder.py")), "not a PEP 660 (import hook) install"
    return python, src


@pytest.mark.slow
def test_optuna_study_of_two_trials_from_an_editable_install(tmp_path):
    python, src = editable_install(tmp_path)
    where = json.loads(subprocess.check_output([python, "-c", INSTALLED], text=True,
                                               cwd=tmp_path, env=fresh_env()))
    assert Path(where["actlab"]).is_relative_to(src)
    assert Path(where["sweepers"]).is_relative_to(src)
    assert "actlab_sweepers" not in where["listed"]  # what Hydra 1.3's scan cannot see
    sweep = tmp_path / "sweep"
    p = subprocess.run(
        [python, "-c", TRAIN, "-m", "+hparams_search=lr_depth", "hydra.sweeper.n_trials=2",
         "train.steps=20", "train.seeds=1", "train.log_every=5", "train.eval_every=10",
         "train.probe_size=64", "train.batch_size=32", "model.width=8", "logger.progress=false",
         f"hydra.sweep.dir={sweep}"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
        env={**fresh_env(), "HYDRA_FULL_ERROR": "1"})
    assert p.returncode == 0, p.stdout + p.stderr
    assert yaml.safe_load((sweep / "multirun.yaml").read_text())["hydra"]["sweeper"][
        "_target_"] == OPTUNA
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["trials"] == {"complete": 2, "pruned": 0, "fail": 0}
    assert results["best_trial"] in (0, 1)
    import optuna

    study = optuna.load_study(study_name="lr_depth", storage=f"sqlite:///{sweep}/optuna.db")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    for t in study.trials:
        summary = json.loads((sweep / str(t.number) / "summary.json").read_text())
        assert summary["status"] == "completed"
        assert summary["aggregate"]["final_eval_acc"]["mean"] == pytest.approx(t.value)
