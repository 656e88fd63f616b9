"""Text for next-token prediction: tokens, windows, and the corpus every CPython ships.

`dataset=text` is the English text of Python's own documentation as CPython's standard
library ships it, `pydoc_data.topics` (the reference manual's topics that `help()` shows:
79 topics, about 465,000 characters and 466,000 UTF-8 bytes in CPython 3.11). Nothing is
downloaded, and it is the running interpreter's copy, so its exact size follows the Python
release. Licence: the Python documentation is distributed under the Python Software
Foundation License Version 2 (PSF-2.0), the licence of CPython itself.

Tokens are bytes (the UTF-8 encoding, vocabulary 256) or characters (vocabulary: the sorted
distinct characters of the whole text). The token stream is split by position: the first
`train_fraction` of it trains, the rest is held out. Each split is cut into consecutive
non-overlapping windows of `context` tokens, the Dataset form of a next-token set:

    x[i] = s[i T : (i + 1) T],   y[i] = s[i T + 1 : (i + 1) T + 1]   (int32 [N, T])

so y is the stream one token on and row i + 1 continues row i. Training draws windows at
any offset of the training stream from these arrays (actlab.engine.step.draw_batch);
evaluation takes the held-out windows as they are, and the probe batch is the first
training windows.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from actlab.data.base import DataError, Dataset
from actlab.registry import Registry

LOADERS: Registry = Registry("dataset", error=DataError)
register = LOADERS.register

TOKENS = ("bytes", "chars")
TASK = "next_token"  # Dataset.task of a next-token set


@dataclasses.dataclass(frozen=True)
class Tokenizer:
    """Text <-> token ids: UTF-8 bytes (vocabulary 256) or the characters of `alphabet`."""

    kind: str  # "bytes" or "chars"
    alphabet: str = ""  # chars: the vocabulary, token i is alphabet[i]

    @property
    def vocab(self) -> int:
        return 256 if self.kind == "bytes" else len(self.alphabet)

    @property
    def unit(self) -> str:
        """What one token is: 'byte' or 'char' (bits per token are bits per this unit)."""
        return "byte" if self.kind == "bytes" else "char"

    def encode(self, text: str) -> np.ndarray:
        """int32 token ids of `text` (one-line DataError for characters outside the alphabet)."""
        if self.kind == "bytes":
            return np.frombuffer(text.encode("utf-8"), np.uint8).astype(np.int32)
        unknown = sorted(set(text) - set(self.alphabet))
        if unknown:
            raise DataError(f"characters {''.join(unknown)!r} are not in this dataset's "
                            f"{len(self.alphabet)}-character vocabulary")
        # the alphabet is sorted by code point: a character's id is its rank there
        return np.searchsorted(_code_points(self.alphabet), _code_points(text)).astype(np.int32)

    def decode(self, tokens) -> str:
        """The text of token ids (bytes: invalid UTF-8 sequences shown as U+FFFD)."""
        ids = [int(t) for t in np.asarray(tokens).reshape(-1)]
        if self.kind == "bytes":
            return bytes(ids).decode("utf-8", errors="replace")
        return "".join(self.alphabet[i] for i in ids)


def _code_points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), np.uint32)


def tokenizer(kind: str, text: str) -> Tokenizer:
    """The tokenizer of kind `kind` for a corpus `text` (chars: its distinct characters)."""
    if kind not in TOKENS:
        raise DataError(f"dataset.tokens must be one of {', '.join(TOKENS)}, got {kind!r}")
    return Tokenizer(kind, "".join(sorted(set(text))) if kind == "chars" else "")


def windows(stream: np.ndarray, context: int, split: str,
            name: str) -> tuple[np.ndarray, np.ndarray]:
    """A token stream as consecutive windows x [N, T] and their next tokens y [N, T]."""
    n = (len(stream) - 1) // context
    if n < 1:
        raise DataError(f"dataset '{name}': its {split} split holds {len(stream)} tokens, "
                        f"fewer than dataset.context + 1 = {context + 1}")
    x = stream[:n * context].reshape(n, context)
    y = stream[1:n * context + 1].reshape(n, context)
    return x.astype(np.int32), y.astype(np.int32)


def from_streams(name: str, tok: Tokenizer, train: np.ndarray, held_out: np.ndarray,
                 context: int) -> Dataset:
    """The next-token Dataset of a training and a held-out token stream (windows above)."""
    x_tr, y_tr = windows(train, context, "train", name)
    x_te, y_te = windows(held_out, context, "held-out", name)
    return Dataset(name=name, x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te,
                   num_classes=tok.vocab, mean=np.zeros((), np.float32),
                   std=np.ones((), np.float32), task=TASK,
                   meta={"tokenizer": tok, "train_tokens": int(x_tr.size),
                         "test_tokens": int(x_te.size)})


def from_texts(name: str, train: str, held_out: str, tokens: str, context: int) -> Dataset:
    """The next-token Dataset of a training text and a held-out text (one vocabulary)."""
    tok = tokenizer(tokens, train + held_out)
    return from_streams(name, tok, tok.encode(train), tok.encode(held_out), context)


def pydoc_corpus() -> str:
    """The text of CPython's `pydoc_data.topics`: every topic, in name order, a blank line
    between topics."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics))


@register("text")
def text(tokens: str = "bytes", context: int = 64, train_fraction: float = 0.9) -> Dataset:
    """CPython's bundled documentation text (pydoc_data.topics, PSF licence), split by
    position: the first train_fraction of its tokens train, the rest is held out."""
    corpus = pydoc_corpus()
    tok = tokenizer(tokens, corpus)
    stream = tok.encode(corpus)
    cut = int(round(train_fraction * len(stream)))
    return from_streams("text", tok, stream[:cut], stream[cut:], context)
