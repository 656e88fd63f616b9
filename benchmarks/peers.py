"""The loops a researcher would write instead of actlab, that figures 2-4 measure it against.

    bare_jax_steps_per_s    figures 2, 3: a minimal hand-written JAX loop, no metrics
    hooked_steps_per_s      figure 3: eager PyTorch, per-layer metrics through forward hooks
    compiled_steps_per_s    figure 3: the same PyTorch loop under torch.compile
    ensemble_member_steps   figure 4: PyTorch's own ensembling (torch.func.stack_module_state
                            + functional_call + vmap), one Adam over the stacked parameters

Each trains the MLP actlab trains in its figure (He-normal weights, zero biases, Adam) on
the same data; PyTorch runs on the GPU when JAX runs on one and PyTorch sees it, else on
every CPU core. PyTorch is not a dependency of actlab: it is imported when one of its
loops runs, and a loop that cannot run raises Skipped with the reason in one line
(`pip install torch==2.13.0`).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import optax

from actlab import data


class Skipped(RuntimeError):
    """A peer that cannot run here; the message says why, in one line."""


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        raise Skipped("torch not installed (pip install torch==2.13.0)") from None
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    return torch


def _device(torch: Any) -> str:
    return "cuda" if torch.cuda.is_available() and jax.default_backend() == "gpu" else "cpu"


def _mlp(torch: Any, d_in: int, width: int, depth: int, classes: int) -> Any:
    """`depth` hidden Linear+ReLU layers of `width` and a Linear head: actlab's MLP with its
    default initialisation (He-normal weights, zero biases)."""
    layers = []
    for _ in range(depth):
        lin = torch.nn.Linear(d_in, width)
        torch.nn.init.kaiming_normal_(lin.weight, nonlinearity="relu")
        torch.nn.init.zeros_(lin.bias)
        layers += [lin, torch.nn.ReLU()]
        d_in = width
    return torch.nn.Sequential(*layers, torch.nn.Linear(d_in, classes))


def _data(torch: Any, name: str, dev: str) -> tuple[Any, Any, int]:
    ds = data.load(name)
    return (torch.tensor(ds.x_train, device=dev),
            torch.tensor(ds.y_train, dtype=torch.long, device=dev), ds.num_classes)


def _sync(torch: Any, dev: str) -> None:
    if dev == "cuda":
        torch.cuda.synchronize()


# --------------------------------------------------------------------------- #
# Figures 2 and 3: the ceiling, a minimal JAX loop.

def bare_jax_steps_per_s(depth: int, width: int, batch: int, steps: int, lr: float) -> float:
    """A minimal hand-written JAX loop: same MLP, Adam, batch; lax.scan, no framework."""
    ds = data.load("spiral")
    x, y = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
    dims = [x.shape[1]] + [width] * depth + [ds.num_classes]
    keys = jax.random.split(jax.random.PRNGKey(0), len(dims))
    params = [(jax.random.normal(k, (a, b)) * jnp.sqrt(2.0 / a), jnp.zeros(b))
              for k, a, b in zip(keys, dims[:-1], dims[1:], strict=False)]
    tx = optax.adam(lr)

    def loss(p, xb, yb):
        h = xb
        for w, b in p[:-1]:
            h = jax.nn.relu(h @ w + b)
        logits = h @ p[-1][0] + p[-1][1]
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    def step(carry, i):
        p, o = carry
        idx = jax.random.randint(jax.random.fold_in(jax.random.PRNGKey(1), i), (batch,), 0,
                                 x.shape[0])
        g = jax.grad(loss)(p, x[idx], y[idx])
        u, o = tx.update(g, o, p)
        return (optax.apply_updates(p, u), o), None

    @jax.jit
    def train_all(p, o):
        return jax.lax.scan(step, (p, o), jnp.arange(steps))[0]

    opt = tx.init(params)
    jax.block_until_ready(train_all(params, opt))  # compile
    best = 0.0
    for _ in range(2):
        t = time.perf_counter()
        jax.block_until_ready(train_all(params, opt))
        best = max(best, steps / (time.perf_counter() - t))
    return best


# --------------------------------------------------------------------------- #
# Figure 3: one model with per-layer metrics.

def _hooked_loop(torch: Any, depth: int, width: int, batch: int, log_every: int, lr: float,
                 compiled: bool) -> tuple[Any, str]:
    """The figure-3 training loop on spiral: every `log_every` steps the gradient norm per
    hidden layer and the dead fraction per hidden layer on a 512-example probe batch, the
    pre-activations captured by forward hooks. `compiled`: the model's forward (hooks
    included) and the optimizer step under torch.compile. Returns run(n) and the device."""
    dev = _device(torch)
    x, y, classes = _data(torch, "spiral", dev)
    probe = x[:512]
    model = _mlp(torch, x.shape[1], width, depth, classes).to(dev)
    hidden = [m for m in model if isinstance(m, torch.nn.Linear)][:-1]
    captured: list = []
    capturing = False
    for lin in hidden:  # pre-activations of every hidden layer, when asked for
        lin.register_forward_hook(lambda m, i, o: captured.append(o) if capturing else None)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    lossf = torch.nn.CrossEntropyLoss()
    forward, opt_step = model, opt.step
    if compiled:
        # static shapes: the training batch and the probe batch get a program each
        forward = torch.compile(model, dynamic=False)
        opt_step = torch.compile(opt.step)
    records = []

    def run(n: int) -> None:
        nonlocal capturing
        for s in range(n):
            idx = torch.randint(0, x.shape[0], (batch,), device=dev)
            opt.zero_grad(set_to_none=True)
            loss = lossf(forward(x[idx]), y[idx])
            loss.backward()
            if s % log_every == 0:
                gn = [torch.sqrt(lin.weight.grad.square().sum() + lin.bias.grad.square().sum())
                      for lin in hidden]
                with torch.no_grad():
                    captured.clear()
                    capturing = True
                    forward(probe)
                    capturing = False
                    dead = [(z <= 0).all(0).float().mean() for z in captured]
                records.append({"loss": loss.item(), "grad_norm": torch.stack(gn).tolist(),
                                "dead_frac": torch.stack(dead).tolist()})
            opt_step()
        _sync(torch, dev)

    return run, dev


def hooked_steps_per_s(depth: int, width: int, batch: int, steps: int, log_every: int,
                       lr: float) -> float:
    """Plain PyTorch eager with hooks: the same MLP, data, Adam and per-layer metrics
    (gradient norm per layer, dead fraction per layer on a 512-example probe batch)."""
    torch = _torch()
    run, _ = _hooked_loop(torch, depth, width, batch, log_every, lr, compiled=False)
    run(min(steps, 50))  # warm-up
    t = time.perf_counter()
    run(steps)
    return steps / (time.perf_counter() - t)


def compiled_steps_per_s(depth: int, width: int, batch: int, steps: int, log_every: int,
                         lr: float) -> tuple[float, float]:
    """The loop of hooked_steps_per_s under torch.compile (Inductor): steady-state steps/s,
    and the seconds the first log interval took beyond its steady-state time (compiling
    the training forward and backward, the probe forward and the optimizer step)."""
    torch = _torch()
    if sys.platform != "win32":  # Inductor's CPU kernels are C++ it compiles on the spot
        cxx = os.environ.get("CXX", "clang++" if sys.platform == "darwin" else "g++")
        if _device(torch) == "cpu" and shutil.which(cxx) is None:
            raise Skipped(f"no C++ compiler ({cxx}) for Inductor's CPU kernels")
    run, _ = _hooked_loop(torch, depth, width, batch, log_every, lr, compiled=True)
    warm = log_every + 1  # a log step and a plain step: every program compiled
    try:
        t = time.perf_counter()
        run(warm)
        first = time.perf_counter() - t
        run(min(steps, 50))
        t = time.perf_counter()
        run(steps)
        steady = time.perf_counter() - t
    except Exception as e:  # noqa: BLE001 - any compiler failure means: not on this machine
        line = (str(e).strip().splitlines() or [""])[0][:160]
        raise Skipped(f"torch.compile failed: {type(e).__name__}: {line}") from None
    return steps / steady, max(first - warm * steady / steps, 0.0)


# --------------------------------------------------------------------------- #
# Figure 4: many seeds.

def ensemble_trainer(n: int, width: int, depth: int, batch: int, lr: float,
                     dataset: str = "mnist1d", dtype: str = "float32") -> tuple[Any, Any]:
    """PyTorch's own ensembling: `n` MLPs stacked with torch.func.stack_module_state, the
    loss of each from torch.func.functional_call vmapped over the members, every member
    its own batches. Returns step(idx=None), one training step of every member on the
    examples idx ([n, batch]; None: drawn at random) giving the n losses, and the stacked
    parameters (name -> [n, ...])."""
    torch = _torch()
    from torch.func import functional_call, stack_module_state

    dev, dt = _device(torch), getattr(torch, dtype)
    x, y, classes = _data(torch, dataset, dev)
    x = x.to(dt)
    members = [_mlp(torch, x.shape[1], width, depth, classes).to(dev, dt) for _ in range(n)]
    params, buffers = stack_module_state(members)
    base = _mlp(torch, x.shape[1], width, depth, classes).to("meta")  # the shapes only

    def loss_of_one(p, b, xb, yb):
        return torch.nn.functional.cross_entropy(functional_call(base, (p, b), (xb,)), yb)

    losses_of = torch.vmap(loss_of_one)
    # Adam is elementwise and every member shares the step count, so one torch.optim.Adam
    # over the stacked [n, ...] tensors is n independent Adams, one per member
    opt = torch.optim.Adam(params.values(), lr=lr)

    def step(idx=None):
        if idx is None:
            idx = torch.randint(0, x.shape[0], (n, batch), device=dev)
        opt.zero_grad(set_to_none=True)
        losses = losses_of(params, buffers, x[idx], y[idx])
        losses.sum().backward()  # members share no parameter: each gets its own gradient
        opt.step()
        return losses.detach()

    return step, params


def ensemble_member_steps(n: int, width: int, depth: int, batch: int, steps: int,
                          lr: float) -> float:
    """Member-steps per second of ensemble_trainer on MNIST-1D, training only (no metrics):
    n x steps / seconds, best of two runs after a warm-up."""
    torch = _torch()
    step, _ = ensemble_trainer(n, width, depth, batch, lr)
    dev = _device(torch)
    for _ in range(min(steps, 20)):  # warm-up
        step()
    best = 0.0
    for _ in range(2):
        _sync(torch, dev)
        t = time.perf_counter()
        for _ in range(steps):
            step()
        _sync(torch, dev)
        best = max(best, n * steps / (time.perf_counter() - t))
    return best
