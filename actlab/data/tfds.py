"""tensorflow-datasets loaders, without TensorFlow (tfds.data_source over array_record).

Nothing is downloaded at training time: a dataset that is not prepared in
`data_dir` gives a one-line error naming the command that prepares it. Images are
standardised; text sets (`tiny_shakespeare`, `lm1b`) become next-token windows (actlab.data.text).
"""

from __future__ import annotations

import numpy as np

from actlab.data import text
from actlab.data.base import DataError, Dataset, standardise
from actlab.registry import Registry

LOADERS: Registry = Registry("dataset", error=DataError)
register = LOADERS.register

IMAGE_SETS = ("mnist", "fashion_mnist", "kmnist", "cifar10", "cifar100", "svhn_cropped")
# text sets: name -> (training split, held-out split), each split's examples joined by a newline
# (tiny_shakespeare: one example per split; lm1b: one sentence per example)
TEXT_SETS = {"tiny_shakespeare": ("train", "validation"), "lm1b": ("train", "test")}


def _source(name: str, split: str, data_dir: str | None):
    import tensorflow_datasets as tfds

    try:
        return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except Exception as e:  # tfds raises several types for "not prepared"
        where = data_dir or "~/tensorflow_datasets"
        raise DataError(
            f"tfds dataset '{name}' is not prepared in {where} ({type(e).__name__}); prepare it "
            f"on a machine with internet: tfds build {name} --data_dir {where} "
            f"--file_format array_record, then copy that folder here"
        ) from None


def _arrays(src, keys: tuple[str, ...], limit: int | None) -> list[np.ndarray]:
    n = len(src) if limit is None else min(limit, len(src))
    rows = [src[i] for i in range(n)]
    return [np.stack([np.asarray(r[k]) for r in rows]) for k in keys]


def _image_loader(name: str):
    def load_fn(data_dir: str | None = None, max_train: int | None = None,
                max_test: int | None = None) -> Dataset:
        tr = _source(name, "train", data_dir)
        te = _source(name, "test", data_dir)
        x_tr, y_tr = _arrays(tr, ("image", "label"), max_train)
        x_te, y_te = _arrays(te, ("image", "label"), max_test)
        num_classes = {"cifar100": 100}.get(name, 10)
        return standardise(name, x_tr / 255.0, y_tr.astype(np.int32), x_te / 255.0,
                           y_te.astype(np.int32), per_feature=False, num_classes=num_classes)

    load_fn.__doc__ = f"tfds '{name}' images scaled to [0, 1], then standardised."
    return load_fn


for _name in IMAGE_SETS:
    register(_name)(_image_loader(_name))


def _text(src, limit: int | None = None) -> str:
    """The first `limit` (None: all) examples' `text` features of a split joined by newlines
    (bytes read as UTF-8)."""
    n = len(src) if limit is None else min(int(limit), len(src))
    parts = (src[i]["text"] for i in range(n))
    return "\n".join(t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in parts)


def _text_loader(name: str, splits: tuple[str, str]):
    def load_fn(data_dir: str | None = None, tokens: str = "bytes", context: int = 64,
                max_train: int | None = None, max_test: int | None = None) -> Dataset:
        train, held_out = (_text(_source(name, split, data_dir), limit)
                           for split, limit in zip(splits, (max_train, max_test), strict=True))
        return text.from_texts(name, train, held_out, tokens, context)

    load_fn.__doc__ = (f"tfds '{name}' text as next-token windows: its {splits[0]} split "
                       f"trains, its {splits[1]} split is held out (at most max_train and "
                       f"max_test examples of them).")
    return load_fn


for _name, _splits in TEXT_SETS.items():
    register(_name)(_text_loader(_name, _splits))


@register("movielens")
def movielens(data_dir: str | None = None, variant: str = "100k-ratings",
              train_fraction: float = 0.8, seed: int = 0) -> Dataset:
    """tfds MovieLens ratings as (user, item) pairs with ratings scaled to [0, 1]."""
    src = _source(f"movielens/{variant}", "train", data_dir)
    users, items, rating = _arrays(src, ("user_id", "movie_id", "user_rating"), None)
    _, u = np.unique(users, return_inverse=True)
    _, i = np.unique(items, return_inverse=True)
    x = np.stack([u, i], 1).astype(np.float32)
    y = ((rating.astype(np.float32) - 1) / 4).clip(0, 1)
    perm = np.random.default_rng(seed).permutation(len(x))
    x, y = x[perm], y[perm]
    n = int(round(train_fraction * len(x)))
    return Dataset(name="movielens", x_train=x[:n], y_train=y[:n], x_test=x[n:], y_test=y[n:],
                   num_classes=1, mean=np.zeros(2, np.float32), std=np.ones(2, np.float32),
                   task="rating", meta={"num_users": int(u.max()) + 1,
                                        "num_items": int(i.max()) + 1, "scale": 4.0})
