"""Reduced versions of the studies in experiments/: each asserts its qualitative finding.

The summaries (python -m experiments.summarise, experiments/registry.py) are run the way the
READMEs run them, from the repository root in a subprocess: `experiments` is a package of
the checkout, not of the installed actlab.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from actlab.cli import check_keys, config_dir
from actlab.config import Config, parse_target
from actlab.engine.resolve import resolve
from actlab.runs import driver as train
from actlab.runs import retrain
from conftest import read_records

ROOT = Path(__file__).resolve().parent.parent
STUDIES = ROOT / "experiments"
SUMMARISE = "python -m experiments.summarise"


def study_dirs() -> list[Path]:
    """Every folder of experiments/ (each one a study), without __pycache__ and the like."""
    return sorted(p for p in STUDIES.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))


def from_root(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """`python ARGS` run in the repository root (as the READMEs' commands are)."""
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def study(name: str, *overrides: str) -> Config:
    """The study's config (as `actlab-train --config-dir experiments/NAME --config-name study`)."""
    with initialize_config_dir(config_dir=str(STUDIES / name), version_base="1.3"):
        cfg = compose("study", overrides=[f"hydra.searchpath=[file://{config_dir()}]",
                                          "logger.progress=false", *overrides])
    return resolve(Config.from_dict(OmegaConf.to_container(cfg, resolve=True)))


def final_records(tmp_path: Path, name: str, activations: tuple[str, ...], steps: int,
                  *overrides: str) -> dict[str, list[dict]]:
    """Train the study for each activation option (2 seeds); each run's records at `steps`."""
    out = {}
    for act in activations:
        cfg = study(name, f"activation={act}", f"train.steps={steps}", "train.seeds=2",
                    f"train.eval_every={steps}", *overrides)
        train.run(cfg, tmp_path / act)
        out[act] = [r for r in read_records(tmp_path / act) if r["step"] == steps]
    return out


def test_every_study_has_a_readme_with_its_commands_and_a_config_that_composes():
    for d in study_dirs():
        first = (d / "study.yaml").read_text().splitlines()[0]
        assert first == f"# actlab-train -m --config-dir experiments/{d.name} --config-name study"
        readme = (d / "README.md").read_text()
        assert first[2:] in readme and "## Result" in readme
        assert f"{SUMMARISE} {d.name}" in readme, d.name  # its summary command
        settings = yaml.safe_load((d / "study.yaml").read_text())
        cfg = study(d.name)  # composed and validated
        resolved = json.loads(json.dumps(cfg.to_dict()))  # tuples as lists
        for section, values in settings.items():
            if section not in ("defaults", "hydra"):
                for key, value in values.items():
                    if (section, key) == ("train", "target"):  # stored in canonical form
                        assert cfg.train.target == parse_target(value), d.name
                    elif (section, key, value) == ("train", "metrics", "none"):
                        assert cfg.train.metrics == (), d.name
                    else:
                        assert resolved[section][key] == value, (d.name, section, key)
        # every key and swept option (hydra.sweeper.params) is known: argv comes back as given
        argv = ["-m", "--config-dir", str(d), "--config-name", "study"]
        assert check_keys(argv) == argv


def first_to_last(tmp_path, act, depth):
    cfg = study("vanishing_gradients", f"activation={act}", f"model.depth={depth}",
                "train.steps=1", "train.log_every=1")
    train.run(cfg, tmp_path / f"{act}{depth}")
    rs = [r for r in read_records(tmp_path / f"{act}{depth}") if r["step"] == 0]
    # layer 1 is the first hidden layer of the same shape (width x width) as the last
    return np.mean([r["grad_norm/1"] / r[f"grad_norm/{depth - 1}"] for r in rs])


@pytest.mark.slow  # end to end, past a newcomer's minutes: CI runs it after the suite
def test_vanishing_gradients_sigmoid_decays_fastest_relu_stays_flat(tmp_path):
    sig5, sig10 = first_to_last(tmp_path, "sigmoid", 5), first_to_last(tmp_path, "sigmoid", 10)
    relu10 = first_to_last(tmp_path, "relu", 10)
    tanh10 = first_to_last(tmp_path, "tanh", 10)
    assert sig10 < sig5 < 0.2 and sig10 < 1e-2
    assert sig10 < tanh10
    assert 0.2 < relu10 < 5


@pytest.mark.slow  # end to end, past a newcomer's minutes: CI runs it after the suite
def test_dying_relu_grows_with_learning_rate_leaky_never_dies(tmp_path):
    out = {}
    for act in ("relu", "leaky_relu"):
        cfg = study("dying_relu", f"activation={act}", "model.depth=4", "train.steps=300",
                    "train.seeds=2", "train.vmap.optimizer.lr=[0.001,1.0]")
        train.run(cfg, tmp_path / act)
        last = {}  # each member's last record (a diverged member stops early)
        for r in read_records(tmp_path / act):
            last[r["seed"], r["optimizer.lr"]] = r
        for lr in (0.001, 1.0):
            out[act, lr] = np.mean([r[f"dead_frac/{l}"] for (_, rate), r in last.items()
                                    if rate == lr for l in range(4)])
    assert out["relu", 1.0] > out["relu", 0.001] + 0.1
    assert out["leaky_relu", 1.0] == out["leaky_relu", 0.001] == 0.0


@pytest.mark.slow  # end to end, past a newcomer's minutes: CI runs it after the suite
@pytest.mark.parametrize("dataset", ["circle", "xor"])
def test_playground_three_relu_neurons_suffice_a_linear_model_cannot(tmp_path, dataset):
    best = {}
    for act in ("relu", "identity"):
        s = train.run(study("playground", f"dataset={dataset}", f"activation={act}"),
                      tmp_path / act)
        best[act] = min((m["final_eval_loss"], m["final_train_loss"]) for m in s["seeds"])
    assert max(best["relu"]) < 0.2  # train and test loss of the best initialisation
    assert min(best["identity"]) > 0.5


@pytest.mark.slow  # end to end, past a newcomer's minutes: CI runs it after the suite
def test_init_x_activation_forward_signal_at_depth_30(tmp_path):
    def ratio(act, init):
        cfg = study("init_x_activation", f"activation={act}", f"init={init}", "train.steps=1",
                    "train.log_every=1", "train.seeds=2")
        train.run(cfg, tmp_path / f"{act}-{init}")
        rs = [r for r in read_records(tmp_path / f"{act}-{init}") if r["step"] == 0]
        return np.mean([r["act_std/29"] / r["act_std/0"] for r in rs])

    assert 0.3 < ratio("relu", "he") < 3
    assert ratio("relu", "glorot") < 1e-2  # variance halves at every layer
    assert 0.5 < ratio("selu", "lecun") < 2  # self-normalising


@pytest.mark.slow  # end to end, past a newcomer's minutes: CI runs it after the suite
def test_normalisation_rescues_deep_sigmoid_gradients(tmp_path):
    def ratio(norm):
        cfg = study("normalisation", "activation=sigmoid", f"model.norm={norm}",
                    "train.steps=1", "train.log_every=1", "train.seeds=2")
        train.run(cfg, tmp_path / norm)
        rs = [r for r in read_records(tmp_path / norm) if r["step"] == 0]
        return np.mean([r["grad_norm/1"] / r["grad_norm/19"] for r in rs])

    none, batch = ratio("none"), ratio("batch")
    assert none < 1e-6 and batch > 1e3 * none


@pytest.mark.slow  # end to end, past a newcomer's minutes: CI runs it after the suite
def test_recommender_gelu_learns_the_ratings_tanh_barely(tmp_path):
    from actlab import data

    ds = data.load("ratings")
    base = float(np.sqrt(np.mean((ds.y_test - ds.y_train.mean()) ** 2)) * ds.meta["scale"])
    final = final_records(tmp_path, "recommender", ("gelu", "tanh"), 1000)
    assert all(len(rs) == 2 for rs in final.values())
    rmse = {act: np.array([r["eval/rmse"] for r in rs]) for act, rs in final.items()}
    assert (rmse["gelu"] < 0.8 * base).all()  # well below predicting the mean rating
    assert (rmse["tanh"] > rmse["gelu"] + 0.1).all()  # no even part: products come hard


@pytest.mark.slow  # end to end, past a newcomer's minutes: CI runs it after the suite
def test_output_heads_softmax_sums_to_one_one_vs_all_does_not(tmp_path):
    from actlab.analysis import expected_calibration_error

    out = {}
    for head in ("softmax", "one_vs_all"):
        cfg = study("output_heads", "dataset=digits", f"model.head={head}", "train.steps=400",
                    "train.seeds=1")
        exp, snaps = retrain.retrain(cfg, [400])
        p = retrain.forward(exp, snaps[400], exp.dataset.x_test)["probs"]
        y = exp.dataset.y_test
        out[head] = (float((p.argmax(1) == y).mean()), p.sum(1),
                     expected_calibration_error(p, y))
    for acc, _, ece in out.values():
        assert acc > 0.85 and 0 <= ece < 0.2
    np.testing.assert_allclose(out["softmax"][1], 1.0, atol=1e-5)
    assert out["one_vs_all"][1].std() > 0.01


@pytest.mark.slow  # end to end, past a newcomer's minutes: CI runs it after the suite
def test_gelu_variants_train_alike_and_swish_beta_is_learned(tmp_path):
    final = final_records(tmp_path, "gelu_vs_swish", ("gelu_exact", "gelu_tanh",
                                                      "swish_learnable"), 300, "model=mlp")
    # the two GELUs differ by < 1e-3 pointwise: the same seeds end within a whisker
    for a, b in zip(final["gelu_exact"], final["gelu_tanh"], strict=True):
        assert a["seed"] == b["seed"]
        assert abs(a["train/loss"] - b["train/loss"]) < 0.02 * a["train/loss"]
        assert abs(a["eval/acc"] - b["eval/acc"]) < 0.03
        assert a["train/loss"] != b["train/loss"]  # yet they are different functions
    betas = [v for r in final["swish_learnable"] for k, v in r.items()
             if k.startswith("swish_beta/")]
    assert len(betas) == 2 * 2 and all(abs(b - 1.0) > 1e-4 for b in betas)


@pytest.mark.slow  # end to end, past a newcomer's minutes: CI runs it after the suite
def test_activation_zoo_linear_network_stays_near_logistic_regression(tmp_path):
    final = final_records(tmp_path, "activation_zoo", ("identity", "relu", "hard_sigmoid"), 1500,
                          "model=mlp")
    acc = {act: np.array([r["eval/acc"] for r in rs]) for act, rs in final.items()}
    # a linear MLP is a linear classifier: MNIST-1D's ~32% for logistic regression
    assert (acc["identity"] < 0.4).all()
    assert (acc["relu"] > acc["identity"] + 0.15).all()
    # hard_sigmoid: phi' = 1/6 at best and 0 past |z| = 3 under He init; far behind relu
    assert (acc["hard_sigmoid"] < acc["relu"] - 0.1).all()


REGISTRY_DUMP = """
import inspect, json
from experiments.registry import SUMMARIES
print(json.dumps({name: [f.__module__, f.__name__, list(inspect.signature(f).parameters)]
                  for name, f in SUMMARIES.items()}))
"""


def test_the_registry_has_one_summary_per_study_folder_each_in_its_folder():
    p = from_root("-c", REGISTRY_DUMP)
    assert p.returncode == 0, p.stderr[-3000:]
    table = json.loads(p.stdout)
    folders = {d.name for d in study_dirs() if (d / "study.yaml").is_file()}
    assert sorted(table) == sorted(folders)  # every study is in the table...
    for name, (module, func, params) in table.items():
        assert (STUDIES / name / "study.yaml").is_file(), name  # ...and every entry a study
        assert (module, func) == (f"experiments.{name}.summarise", "summarise"), name
        assert params == ["sweep", "out_dir"], name  # the common signature
    assert "sys.path" not in "".join(f.read_text() for f in STUDIES.rglob("*.py"))


def test_summarise_rejects_an_unknown_study_in_one_line_naming_the_known_ones():
    p = from_root("-m", "experiments.summarise", "no_such_study", timeout=300)
    known = ", ".join(sorted(d.name for d in study_dirs()))
    assert p.returncode == 2
    assert p.stderr == (f"{SUMMARISE}: error: unknown study 'no_such_study'; "
                        f"known: {known}\n")
    assert p.stdout == ""


@pytest.mark.slow  # end to end (subprocesses or long runs): CI runs it after the suite
def test_summarise_writes_results_and_report_figures_of_a_sweep(tmp_path):
    for act in ("relu", "identity"):  # playground: the cheapest study to train
        cfg = study("playground", "dataset=circle", f"activation={act}", "train.steps=200",
                    "train.seeds=2", "train.log_every=100", "train.eval_every=100")
        train.run(cfg, tmp_path / "sweep" / act)
    out = tmp_path / "out"
    p = from_root("-m", "experiments.summarise", "playground", str(tmp_path / "sweep"),
                  "--out", str(out))
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.strip() == f"wrote {out / 'results.md'}"
    lines = (out / "results.md").read_text().splitlines()
    assert lines[0].startswith("| dataset | activation | best test loss |")
    assert {ln.split(" | ")[1] for ln in lines[2:]} == {"identity", "relu"}
    for png in ("grad_norm_init.png", "convergence.png", "learning_curves.png"):
        assert (out / png).stat().st_size > 0, png
