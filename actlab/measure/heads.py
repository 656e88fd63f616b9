"""Output heads: the loss, the measures and the probabilities of each head and task.

One place, used by training, evaluation, the probes and replay:

- softmax: softmax cross-entropy against integer labels;
- one_vs_all: an independent sigmoid per class, binary cross-entropy summed over classes;
- mse (model.loss=mse, softmax head): the raw outputs f against one-hot targets e_y,
  loss = mean over examples of (1/2) sum_c (f_c - e_{y,c})^2, the squared loss of
  Cohen et al. (2021), whose edge-of-stability experiments use it; accuracy is the
  argmax's and the probabilities are the softmax of the outputs;
- rating (the recommender's task): one sigmoid unit against ratings scaled to [0, 1],
  mean squared error; RMSE reported in the dataset's units (`scale`);
- next_token (text, a causal model's logits [B, T, V] against the next tokens [B, T]):
  softmax cross-entropy in nats, the mean over every position of every window; `acc` is
  next-token accuracy, `bpb` = loss / ln 2 the bits per token (bits per byte for byte
  tokens, bits per character for character tokens) and `ppl` = exp(loss) the perplexity.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import optax

from actlab.config import HEADS  # noqa: F401  (the names live in config)
from actlab.data.text import TASK as NEXT_TOKEN
from actlab.measure import metrics
from actlab.models import CAUSAL_MODELS, ModelError

if TYPE_CHECKING:
    from actlab.config import Config
    from actlab.data import Dataset


@dataclasses.dataclass(frozen=True)
class Head:
    """loss(logits, y) -> mean loss; measures(logits, y) -> {loss, acc[, rmse]}; probs."""

    loss: Callable[[jax.Array, jax.Array], jax.Array]
    measures: Callable[[jax.Array, jax.Array], dict[str, jax.Array]]
    probs: Callable[[jax.Array], jax.Array]


def _rating(scale: float) -> Head:
    def loss(logits: jax.Array, y: jax.Array) -> jax.Array:
        return jnp.mean((jax.nn.sigmoid(logits[:, 0]) - y) ** 2)

    def measures(logits: jax.Array, y: jax.Array) -> dict[str, jax.Array]:
        mse = loss(logits, y)
        return {"loss": mse, "acc": jnp.float32(jnp.nan), "rmse": jnp.sqrt(mse) * scale}

    return Head(loss, measures, jax.nn.sigmoid)


def _classifier(loss: Callable, probs: Callable) -> Head:
    def measures(logits: jax.Array, y: jax.Array) -> dict[str, jax.Array]:
        return {"loss": loss(logits, y), "acc": metrics.accuracy(logits, y)}

    return Head(loss, measures, probs)


def _next_token() -> Head:
    def measures(logits: jax.Array, y: jax.Array) -> dict[str, jax.Array]:
        loss = _softmax_loss(logits, y)
        return {"loss": loss, "acc": metrics.accuracy(logits, y), "bpb": loss / math.log(2.0),
                "ppl": jnp.exp(loss)}

    return Head(_softmax_loss, measures, lambda logits: jax.nn.softmax(logits, -1))


def _softmax_loss(logits: jax.Array, y: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def _one_vs_all_loss(logits: jax.Array, y: jax.Array) -> jax.Array:
    onehot = jax.nn.one_hot(y, logits.shape[-1])
    return optax.sigmoid_binary_cross_entropy(logits, onehot).sum(-1).mean()


def _mse_loss(logits: jax.Array, y: jax.Array) -> jax.Array:
    out = logits.astype(jnp.float32)
    onehot = jax.nn.one_hot(y, out.shape[-1], dtype=out.dtype)
    return 0.5 * jnp.mean(jnp.sum(jnp.square(out - onehot), axis=-1))


def head(name: str, task: str = "classification", scale: float = 1.0,
         loss: str = "cross_entropy") -> Head:
    """The head named by model.head for the dataset's task, with model.loss's loss.

    loss: "cross_entropy" (the head's own) or "mse" (classification with the softmax head);
    a rating task has its own squared loss whatever `loss` says.
    """
    if task == "rating":
        return _rating(scale)
    if task == NEXT_TOKEN:
        if name != "softmax" or loss != "cross_entropy":
            raise ModelError(f"next-token prediction trains the softmax cross-entropy; "
                             f"model.head={name} model.loss={loss} do not apply to text")
        return _next_token()
    if loss == "mse":
        return _classifier(_mse_loss, lambda logits: jax.nn.softmax(logits, -1))
    if name == "one_vs_all":
        return _classifier(_one_vs_all_loss, jax.nn.sigmoid)
    return _classifier(_softmax_loss, lambda logits: jax.nn.softmax(logits, -1))


def of_config(config: Config, dataset: Dataset) -> Head:
    """The head of a configuration (model.head, model.loss) for a dataset.

    Text (next-token windows) needs a causal model, and a causal model needs text.
    """
    causal = config.model.name in CAUSAL_MODELS
    if (dataset.task == NEXT_TOKEN) != causal:
        raise ModelError(
            f"dataset '{dataset.name}' holds token windows for next-token prediction; use "
            f"model={' or model='.join(CAUSAL_MODELS)}" if not causal else
            f"model={config.model.name} is a causal language model; it needs a text dataset "
            f"(dataset=text, tiny_shakespeare or lm1b), not '{dataset.name}'")
    return head(config.model.head, dataset.task, dataset.meta.get("scale", 1.0),
                config.model.loss)
