"""Text datasets: the bundled corpus, tokens, windows and how batches are drawn from them;
tfds text sets under mock data; targets and summaries in bits per byte."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from actlab import data
from actlab.cli import config_dir
from actlab.config import Config, ConfigError, parse_target
from actlab.data import text
from actlab.engine import experiment, step
from actlab.engine.resolve import resolve
from actlab.engine.state import TrainState
from actlab.models import ModelError
from actlab.runs import driver
from actlab.runs.records import Tracker
from conftest import make_config, read_records


def corpus_bytes() -> np.ndarray:
    """The corpus as UTF-8 bytes, straight from the standard library."""
    from pydoc_data.topics import topics

    joined = "\n\n".join(topics[k] for k in sorted(topics))
    return np.frombuffer(joined.encode("utf-8"), np.uint8)


def test_corpus_ships_with_python_and_is_its_documentation():
    from pydoc_data.topics import topics

    stream = corpus_bytes()
    assert len(topics) > 50 and "if" in topics and "assert" in topics
    assert 300_000 < stream.size < 1_000_000  # about 466 kB in CPython 3.11
    assert text.pydoc_corpus().startswith('The "assert" statement')


@pytest.mark.parametrize("context", [7, 64])
def test_byte_windows_are_consecutive_shifts_of_the_corpus(context):
    ds = data.load("text", context=context)
    s = corpus_bytes().astype(np.int32)
    cut = int(round(0.9 * s.size))
    train, held = s[:cut], s[cut:]
    n, m = (train.size - 1) // context, (held.size - 1) // context
    assert ds.x_train.shape == ds.y_train.shape == (n, context)
    assert ds.x_test.shape == ds.y_test.shape == (m, context)
    assert ds.x_train.dtype == ds.y_train.dtype == np.int32
    np.testing.assert_array_equal(ds.x_train.reshape(-1), train[:n * context])
    np.testing.assert_array_equal(ds.y_train.reshape(-1), train[1:n * context + 1])
    np.testing.assert_array_equal(ds.x_test.reshape(-1), held[:m * context])
    np.testing.assert_array_equal(ds.y_test.reshape(-1), held[1:m * context + 1])
    assert ds.num_classes == 256 and ds.task == "next_token" and ds.input_shape == (context,)


def test_char_tokens_are_ranks_in_the_sorted_alphabet_and_decode_back():
    ds = data.load("text", tokens="chars", context=32)
    corpus = text.pydoc_corpus()
    alphabet = sorted(set(corpus))
    tok = ds.meta["tokenizer"]
    assert ds.num_classes == len(alphabet) == tok.vocab and tok.alphabet == "".join(alphabet)
    rank = {c: i for i, c in enumerate(alphabet)}
    head = corpus[:32 * 5]
    np.testing.assert_array_equal(ds.x_train[:5].reshape(-1), [rank[c] for c in head])
    assert tok.decode(ds.x_train[:5]) == head
    assert tok.decode(ds.y_train[0]) == corpus[1:33]
    with pytest.raises(data.DataError, match="not in this dataset's"):
        tok.encode("\u2603")
    b = text.tokenizer("bytes", "")
    assert b.decode(b.encode("naïve — ok")) == "naïve — ok"


def _state(step_number: int) -> TrainState:
    return TrainState(params={}, opt_state=(), model_state={}, step=jnp.int32(step_number),
                      diverged_at=jnp.int32(-1), key=jax.random.PRNGKey(3), consts={})


def test_training_batches_are_windows_at_any_offset_of_the_stream():
    t = 8
    stream = np.arange(1, 40 * t + 2, dtype=np.int32) * 7 % 1009  # 40 windows, distinct tokens
    x, y = text.windows(stream, t, "train", "synthetic")
    starts = []
    for k in range(20):
        xb, yb = step.draw_batch(_state(k), jnp.asarray(x), jnp.asarray(y), 16)
        xb, yb = np.asarray(xb), np.asarray(yb)
        assert xb.shape == yb.shape == (16, t)
        for row_x, row_y in zip(xb, yb, strict=True):
            s = int(np.flatnonzero(stream == row_x[0])[0])  # the window's start in the stream
            np.testing.assert_array_equal(row_x, stream[s:s + t])
            np.testing.assert_array_equal(row_y, stream[s + 1:s + t + 1])
            starts.append(s)
    # every offset in 0 .. N T - T can start a window, not only multiples of T
    assert min(starts) >= 0 and max(starts) <= x.size - t
    assert len({s % t for s in starts}) == t
    assert max(starts) > x.size - 2 * t  # windows reach the end of the stream


def test_full_batch_is_every_window_in_order():
    x, y = text.windows(np.arange(33, dtype=np.int32), 8, "train", "synthetic")
    xb, yb = step.draw_batch(_state(0), jnp.asarray(x), jnp.asarray(y), 4)
    np.testing.assert_array_equal(np.asarray(xb), x)
    np.testing.assert_array_equal(np.asarray(yb), y)


def test_bad_text_settings_are_one_line_errors():
    for params, message in (({"context": 0}, "dataset.context must be an integer >= 1"),
                            ({"tokens": "words"}, "unknown dataset.tokens 'words'"),
                            ({"train_fraction": 1.0}, "train_fraction must be in")):
        with pytest.raises(ConfigError, match=message):
            make_config(dataset={"name": "text", **params})
    with pytest.raises(data.DataError, match="fewer than dataset.context"):
        text.windows(np.arange(5), 8, "held-out", "tiny")


def test_text_needs_a_causal_model_and_gpt_needs_text():
    with pytest.raises(ModelError, match="next-token prediction; use model=gpt"):
        experiment.build(make_config(dataset={"name": "text", "context": 8}))
    with pytest.raises(ModelError, match="reads token windows"):
        experiment.build(make_config(model={"name": "gpt"}, dataset={"name": "digits"}))
    with pytest.raises(ModelError, match="needs a text dataset"):
        experiment.build(make_config(model={"name": "gpt"}, dataset={"name": "mnist1d"}))
    with pytest.raises(ModelError, match="softmax cross-entropy"):
        experiment.build(make_config(model={"name": "gpt", "loss": "mse"},
                                     dataset={"name": "text", "context": 8}))


def test_bpb_targets_parse_and_the_summary_keeps_the_lowest():
    t = parse_target("eval/bpb<=2.0")
    assert (t.key, t.op, t.value) == ("eval/bpb", "<=", 2.0)
    assert parse_target("eval/ppl<5").key == "eval/ppl"
    tr = Tracker({"seed": 0}, t)
    for s, bpb in ((0, 8.0), (10, 1.9), (20, 2.5)):
        tr.update({"step": s, "wall_time": float(s), "train/loss": bpb * math.log(2),
                   "eval/loss": bpb * math.log(2), "eval/acc": 0.1, "eval/bpb": bpb})
    got = tr.summary()
    assert got["final_eval_bpb"] == 2.5 and got["best_eval_bpb"] == 1.9
    assert got["steps_to_target"] == 10


def composed(*overrides: str) -> Config:
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
    return resolve(Config.from_dict(OmegaConf.to_container(cfg, resolve=True)))


def test_tfds_text_set_under_mock_data_trains_through_hydra(tmp_path):
    cfg = composed("model=gpt", "dataset=tiny_shakespeare", "dataset.context=4", "model.dim=8",
                   "model.heads=2", "model.depth=1", "train.steps=4", "train.log_every=2",
                   "train.eval_every=2", "train.batch_size=4", "train.probe_size=4",
                   "train.target='eval/bpb<=100'", "logger.progress=false")
    with tfds.testing.mock_data(num_examples=8):
        src = tfds.data_source("tiny_shakespeare", split="train", download=False)
        train = "\n".join(str(src[i]["text"]) for i in range(len(src)))
        ds = data.load("tiny_shakespeare", context=4)
        s = driver.run(cfg, tmp_path)
    stream = np.frombuffer(train.encode("utf-8"), np.uint8)
    n = (stream.size - 1) // 4
    np.testing.assert_array_equal(ds.x_train.reshape(-1), stream[:4 * n])
    assert s["status"] == "completed" and s["seeds"][0]["steps_to_target"] == 0
    last = read_records(tmp_path)[-1]
    assert np.isfinite(last["eval/bpb"]) and np.isfinite(last["grad_norm/0"])


def test_unprepared_tfds_text_set_names_the_command(tmp_path):
    with pytest.raises(data.DataError) as e:
        data.load("tiny_shakespeare", data_dir=str(tmp_path))
    assert "tfds build tiny_shakespeare" in str(e.value) and "\n" not in str(e.value)


def test_lm1b_sentences_joined_up_to_max_train(tmp_path):
    with tfds.testing.mock_data(num_examples=12):
        src = tfds.data_source("lm1b", split="train", download=False)
        sentences = [src[i]["text"] for i in range(5)]
        ds = data.load("lm1b", context=4, max_train=5, max_test=3)
    joined = "\n".join(t.decode("utf-8") if isinstance(t, bytes) else str(t)
                       for t in sentences)
    stream = np.frombuffer(joined.encode("utf-8"), np.uint8)
    n = (stream.size - 1) // 4
    np.testing.assert_array_equal(ds.x_train.reshape(-1), stream[:4 * n])
    np.testing.assert_array_equal(ds.y_train.reshape(-1), stream[1:4 * n + 1])
    assert ds.num_classes == 256 and ds.task == "next_token"
