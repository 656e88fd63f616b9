"""Figure 13: tokens per second of actlab's causal language model against the PyTorch loop
a researcher would write instead, side by side on the same machine.

    actlab      model=gpt on dataset=text through actlab.runs.driver.run, every default
                metric on at train.log_every=50 (train_seconds: compilation excluded)
    eager       the same decoder as a plain nanoGPT-style PyTorch module and training loop
    compiled    that loop with the module (loss included) and the optimizer step under
                torch.compile (Inductor), where it compiles on this machine

Both train the decoder of actlab/models/gpt.py with its defaults: a byte vocabulary of 256,
learned positions, pre-LayerNorm blocks of causal self-attention and an MLP with the
activation (exact GELU), a final LayerNorm and the token table as the output embedding;
GPT-2's initialisation; Adam; the same batch of windows drawn with replacement from the
same training windows. The PyTorch loop trains only (its loss read every log_every steps);
its parameter count is checked against actlab's. Without PyTorch (`pip install
torch==2.13.0`) its rows say skipped.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from typing import Any

from actlab import data
from benchmarks import peers
from benchmarks.run import Row, config, steps_per_s, timed_run


@dataclass(frozen=True)
class Setup:
    """One size of the figure: the decoder, its windows and the training run."""

    depth: int = 2
    dim: int = 64
    heads: int = 4
    mlp_ratio: int = 4
    context: int = 64
    batch: int = 32
    lr: float = 3e-3
    steps: int = 600
    log_every: int = 50
    warmup: int = 20  # PyTorch steps run before timing
    probe_size: int = 512  # actlab's probe batch (train.probe_size's default)
    repeats: int = 2  # best of

    def label(self) -> str:
        return (f"GPT d{self.depth} dim{self.dim} h{self.heads} ctx{self.context} "
                f"b{self.batch}, text")

    def tokens(self, steps: int) -> int:
        return steps * self.batch * self.context


FULL = Setup()
QUICK = Setup(dim=32, context=32, batch=16, steps=30, warmup=3, probe_size=64, repeats=1)


def actlab_config(s: Setup) -> Any:
    """The actlab run of the figure: model=gpt dataset=text, activation gelu, Adam, 1 seed."""
    return config(model={"name": "gpt", "depth": s.depth, "dim": s.dim, "heads": s.heads,
                         "mlp_ratio": s.mlp_ratio, "context": s.context},
                  activation={"name": "gelu"}, dataset={"name": "text", "context": s.context},
                  optimizer={"name": "adam", "lr": s.lr},
                  train={"steps": s.steps, "batch_size": s.batch, "seed": 0, "seeds": 1,
                         "log_every": s.log_every, "eval_every": 0,
                         "probe_size": s.probe_size})


def actlab_tokens_per_s(s: Setup) -> tuple[float, int]:
    """Best of `s.repeats` runs: tokens / train_seconds; and the run's parameter count."""
    summaries = [timed_run(actlab_config(s)) for _ in range(s.repeats)]
    best = max(s.tokens(s.steps) / r["train_seconds"] for r in summaries)
    return best, int(summaries[0]["num_params"])


# --------------------------------------------------------------------------- #
# The PyTorch peer.

def torch_gpt(torch: Any, s: Setup, vocab: int = 256) -> Any:
    """actlab's gpt as nanoGPT writes it: forward(idx [B, T], targets [B, T]) gives the
    mean next-token cross-entropy. Fused query/key/value projection (the same parameters
    as three), scaled_dot_product_attention with the causal mask, the output head tied to
    the token table; every weight N(0, 0.02^2), the two residual projections
    N(0, (0.02 / sqrt(2 depth))^2), biases zero, LayerNorms at identity."""
    nn, F = torch.nn, torch.nn.functional
    module: Any = nn.Module
    dim, heads, hidden = s.dim, s.heads, s.mlp_ratio * s.dim

    class Block(module):
        def __init__(self) -> None:
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(dim, eps=1e-5), nn.LayerNorm(dim, eps=1e-5)
            self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
            self.fc, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

        def forward(self, x: Any) -> Any:
            b, t, c = x.shape
            q, k, v = (a.view(b, t, heads, c // heads).transpose(1, 2)
                       for a in self.qkv(self.ln1(x)).split(c, 2))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.proj(y.transpose(1, 2).reshape(b, t, c))
            return x + self.fc2(F.gelu(self.fc(self.ln2(x))))

    class GPT(module):
        def __init__(self) -> None:
            super().__init__()
            self.wte, self.wpe = nn.Embedding(vocab, dim), nn.Embedding(s.context, dim)
            self.blocks = nn.ModuleList(Block() for _ in range(s.depth))
            self.ln_f = nn.LayerNorm(dim, eps=1e-5)
            self.head = nn.Linear(dim, vocab, bias=False)
            self.head.weight = self.wte.weight  # tied: one table, counted once
            for name, p in self.named_parameters():
                if name.endswith("bias"):
                    nn.init.zeros_(p)
                elif p.dim() == 2:
                    out = name.endswith(("proj.weight", "fc2.weight"))
                    nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * s.depth) if out else 0.02)

        def forward(self, idx: Any, targets: Any) -> Any:
            pos = torch.arange(idx.shape[1], device=idx.device)
            x = self.wte(idx) + self.wpe(pos)
            for block in self.blocks:
                x = block(x)
            logits = self.head(self.ln_f(x))
            return F.cross_entropy(logits.view(-1, vocab), targets.view(-1))

    return GPT()


def param_count(module: Any) -> int:
    """Parameters of a torch module, a tied one once."""
    return sum(p.numel() for p in module.parameters())


def _loop(torch: Any, s: Setup, compiled: bool) -> tuple[Any, int]:
    """run(n): n training steps of torch_gpt on random training windows of dataset=text;
    and the model's parameter count."""
    dev = peers._device(torch)
    ds = data.load("text", context=s.context)
    x = torch.from_numpy(ds.x_train).long().to(dev)
    y = torch.from_numpy(ds.y_train).long().to(dev)
    model = torch_gpt(torch, s, ds.num_classes).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=s.lr, betas=(0.9, 0.999), eps=1e-8)
    forward, opt_step = model, opt.step
    if compiled:
        forward = torch.compile(model, dynamic=False)
        opt_step = torch.compile(opt.step)
    losses: list[float] = []

    def run(n: int) -> None:
        for i in range(n):
            idx = torch.randint(0, x.shape[0], (s.batch,), device=dev)
            loss = forward(x[idx], y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt_step()
            if i % s.log_every == 0:
                losses.append(loss.item())
        peers._sync(torch, dev)

    return run, param_count(model)


def torch_tokens_per_s(s: Setup, compiled: bool = False) -> tuple[float, int, float]:
    """Tokens/s of the PyTorch loop, best of `s.repeats` runs of `s.steps` steps after a
    warm-up; its parameter count; and (compiled) the seconds the warm-up took beyond its
    steady-state time, compiling. Raises peers.Skipped when it cannot run here."""
    torch = peers._torch()
    if compiled and sys.platform != "win32":  # Inductor's CPU kernels are C++ built here
        cxx = os.environ.get("CXX", "clang++" if sys.platform == "darwin" else "g++")
        if peers._device(torch) == "cpu" and shutil.which(cxx) is None:
            raise peers.Skipped(f"no C++ compiler ({cxx}) for Inductor's CPU kernels")
    run, n_params = _loop(torch, s, compiled)
    try:
        t = time.perf_counter()
        run(s.warmup)
        first = time.perf_counter() - t
        best = 0.0
        for _ in range(s.repeats):
            t = time.perf_counter()
            run(s.steps)
            best = max(best, s.tokens(s.steps) / (time.perf_counter() - t))
    except Exception as e:  # noqa: BLE001 - any compiler failure means: not on this machine
        if not compiled:
            raise
        line = (str(e).strip().splitlines() or [""])[0][:160]
        raise peers.Skipped(f"torch.compile failed: {type(e).__name__}: {line}") from None
    return best, n_params, max(first - s.tokens(s.warmup) / best, 0.0)


# --------------------------------------------------------------------------- #

def fig13(q: bool) -> list[Row]:
    """actlab's tokens/s against the PyTorch loop, eager and compiled."""
    s = QUICK if q else FULL
    ours, n_params = actlab_tokens_per_s(s)
    every = f"all metrics @{s.log_every}"
    rows = []
    for compiled, name, target in ((False, "PyTorch eager", ">= 2x"),
                                   (True, "PyTorch torch.compile of the same loop",
                                    "(report)")):
        label = f"13 LM tokens/s ({every}) vs {name}, {s.label()}"
        try:
            pt, pt_params, compile_s = torch_tokens_per_s(s, compiled)
        except peers.Skipped as e:
            rows.append(Row(label, f"skipped: {e}", None, target, None,
                            f"actlab {ours:,.0f} tokens/s"))
            continue
        if pt_params != n_params:
            raise AssertionError(f"the PyTorch GPT has {pt_params} parameters, actlab's "
                                 f"{n_params}")
        r = ours / pt
        note = f"{n_params:,} parameters each; PyTorch: training only"
        if compiled:
            note += f"; torch.compile: {compile_s:.0f} s compiling, not counted"
        rows.append(Row(label, f"{ours:,.0f} vs {pt:,.0f} tokens/s", r, target,
                        r >= 2 if not compiled else None, note))
    return rows


def fig14(q: bool) -> list[Row]:
    """The cost of watching: a plain linen MLP as model=custom against the built-in MLP of
    the same shape (depth 8, width 64, relu), every metric at log_every=10, as figure 1."""
    steps = 200 if q else 4000
    train = {"steps": steps, "batch_size": 128, "log_every": 10}
    builtin = steps_per_s(config({"model": {"depth": 8, "width": 64}}, train=train))
    custom = steps_per_s(config({"model": {
        "name": "custom", "target": "actlab.models.clients:linen_mlp",
        "kwargs": {"depth": 8, "width": 64}, "sites": {"Dense_*": "relu"}}}, train=train))
    r = custom / builtin
    return [Row("14 watching a linen MLP (model=custom) vs the built-in MLP, all metrics @10, "
                "d8 w64 b128", f"{custom:.0f} vs {builtin:.0f} steps/s", r, ">= 0.95",
                r >= 0.95)]
