"""The MLP: identical hidden layers run under lax.scan, so compile time is flat in depth.

Layer l computes z_l = norm(W_l h_{l-1} + b_l) (+ eps_l), h_l = dropout(phi_l(z_l)),
plus h_{l-1} when residual (layers 1..depth-1, whose widths match). norm is layer norm,
batch norm or DyT (gamma tanh(alpha z) + beta, a learned alpha per layer). With a gated
unit (GLU family) each layer's kernel is fused, [fan_in, 2U]: z_l = [z_g, z_v] and
h_l = gate(z_g + eps_l) * z_v (actlab.models.unit). With a doubled unit (crelu) h_l =
phi([z_l, -z_l] + eps_l) is 2W wide, and so is the input of the next layer.
Parameters: in_kernel [D, W], in_bias [W], hidden_kernel [depth-1, W, W] and
hidden_bias [depth-1, W] when scanned (unrolled: hidden<l>_kernel [W, W] and
hidden<l>_bias [W] per layer, which the backward pass need not scatter into a
stack), out_kernel [W, C], out_bias [C]; norm scale/bias
[depth, W] when normalised (and DyT's dyt_alpha [depth]); learned activation
parameters act_<p> [depth] (or act<l>_<p> when the layers use different activations).
Gated: W is the number of units U, and every kernel and bias producing z has 2U columns.
Doubled: every kernel that takes h has 2W rows, hidden_kernel [depth-1, 2W, W] (hidden<l>_kernel
[2W, W]) and out_kernel [2W, C]; the initializers read that fan-in from the shape.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from actlab.activations import Spec
from actlab.models import initializers
from actlab.models import param as param_lib
from actlab.models.base import (
    GLU_WIDTHS,
    Model,
    ModelError,
    Role,
    choice,
    fraction,
    is_doubled,
    is_gated,
    matched_units,
    paired,
    positive_int,
    unit,
)

NORM_EPS = 1e-5
BN_MOMENTUM = 0.9


UNROLL_MAX_DEPTH = 8  # scan_layers="auto": deeper homogeneous stacks run under lax.scan


class MLP(nn.Module):
    depth: int
    width: int
    num_classes: int
    specs: tuple[Spec, ...]
    init_name: str = "he"
    distribution: str = "normal"
    gain: float = 1.0
    sigma_w2: initializers.SigmaW2 = None  # Var w = gain^2 sigma_w2 / fan_in (one per layer)
    sigma_b2: float = 0.0  # hidden biases N(0, sigma_b2); 0: zeros
    norm: str = "none"  # none | layer | batch | dyt
    dyt_alpha0: float = 0.5  # DyT's initial alpha
    dropout: float = 0.0
    residual: bool = False
    # True: identical hidden layers run under lax.scan (compile time flat in depth); False
    # unrolls them (same numbers); "auto" scans only past UNROLL_MAX_DEPTH layers, where
    # unrolled compile time starts to matter (shallow unrolled stacks run ~5% faster).
    scan_layers: bool | str = "auto"
    # width parametrization (actlab.models.param): sp | mup | ntk, and muP's reference width
    parametrization: str = "sp"
    base_width: int = 64

    @property
    def homogeneous(self) -> bool:
        return all(s == self.specs[0] for s in self.specs)

    @nn.compact
    def __call__(self, x, eps=None, capture: bool = False, train: bool = False):
        x = x.reshape((x.shape[0], -1))
        L, W = self.depth, self.width
        scheme = initializers.Scheme(self.init_name, self.distribution, self.gain, self.sigma_w2,
                                 self.sigma_b2)
        kinit, sinit, binit = scheme.kernel(0), scheme.kernel(1, stacked=True), scheme.bias()
        gated = is_gated(self.specs)
        if gated:
            kinit, sinit = paired(kinit), paired(sinit)
        P = 2 * W if gated else W  # columns of each kernel producing z
        F = 2 * W if is_doubled(self.specs) else W  # width of h: rows of each kernel taking it
        # the width parametrization: init scale and forward multiplier per kind of kernel
        pz, m, D = self.parametrization, W / self.base_width, x.shape[-1]
        mult = {"input": param_lib.multiplier(pz, "input", D, m),
                "hidden": param_lib.multiplier(pz, "hidden", F, m),
                "output": param_lib.multiplier(pz, "output", F, m)}
        kinit = param_lib.scaled(kinit, param_lib.init_scale(pz, "input", D, m))
        sinit = param_lib.scaled(sinit, param_lib.init_scale(pz, "hidden", F, m))
        k_in = self.param("in_kernel", kinit, (x.shape[-1], P))
        b_in = self.param("in_bias", binit, (P,))
        scan = self.homogeneous and (L > UNROLL_MAX_DEPTH if self.scan_layers == "auto"
                                     else bool(self.scan_layers))
        if L > 1 and scan:
            k_h = self.param("hidden_kernel", sinit, (L - 1, F, P))
            b_h = self.param("hidden_bias", binit, (L - 1, P))
        hidden_key = bias_key = None
        if L > 1 and not scan and self.is_initializing():
            # unrolled layers hold their own arrays (made below, after every other parameter);
            # they are drawn exactly as the stacked ones would be, from the key that the
            # stacked kernel takes at this point, so both layouts start from the same numbers
            hidden_key = self.make_rng("params")
            bias_key = self.make_rng("params")  # the stacked bias's turn
        oinit = param_lib.scaled(
            initializers.kernel_init("orthogonal" if self.init_name == "orthogonal" else "glorot"),
            param_lib.init_scale(pz, "output", F, m))
        k_out = self.param("out_kernel", oinit, (F, self.num_classes))
        b_out = self.param("out_bias", nn.initializers.zeros, (self.num_classes,))

        norm: dict[str, jax.Array] = {}
        if self.norm != "none":
            norm["scale"] = self.param("norm_scale", nn.initializers.ones, (L, P))
            norm["bias"] = self.param("norm_bias", nn.initializers.zeros, (L, P))
        if self.norm == "dyt":
            norm["alpha"] = self.param("dyt_alpha", nn.initializers.constant(self.dyt_alpha0),
                                       (L,))
        if self.norm == "batch":
            ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (L, P))
            ra_var = self.variable("batch_stats", "var", jnp.ones, (L, P))
            norm["ra_mean"], norm["ra_var"] = ra_mean.value, ra_var.value

        if self.homogeneous:
            sp0 = self.specs[0]
            learned = {p: self.param(f"act_{p}", nn.initializers.constant(v), (L,))
                       for p, v in sp0.learned.items()}
            layer_learned = [{p: v[l] for p, v in learned.items()} for l in range(L)]
        else:
            layer_learned = [
                {p: self.param(f"act{l}_{p}", nn.initializers.constant(v), ())
                 for p, v in sp.learned.items()}
                for l, sp in enumerate(self.specs)
            ]
        if L > 1 and not scan:
            def hidden_init(l, fn, stack_key):
                # (Flax also calls this outside init, for shapes only: any key will do there)
                return lambda key, shape: fn(key if stack_key is None else stack_key,
                                             (L - 1, *shape))[l - 1]

            k_h = [self.param(f"hidden{l}_kernel", hidden_init(l, sinit, hidden_key), (F, P))
                   for l in range(1, L)]
            b_h = [self.param(f"hidden{l}_bias", hidden_init(l, binit, bias_key), (P,))
                   for l in range(1, L)]
        drop_key = self.make_rng("dropout") if (train and self.dropout > 0) else None

        def layer(sp, l, h, k, b, nrm, e, lp, residual, c):
            z = (h @ k if c == 1.0 else (h @ k) * c) + b  # c: the parametrization's multiplier
            stats = None
            if self.norm == "layer":
                mu, var = z.mean(-1, keepdims=True), z.var(-1, keepdims=True)
                z = (z - mu) * jax.lax.rsqrt(var + NORM_EPS) * nrm["scale"] + nrm["bias"]
            elif self.norm == "batch":
                if train:
                    mu, var = z.mean(0), z.var(0)
                    stats = (mu, var)
                else:
                    mu, var = nrm["ra_mean"], nrm["ra_var"]
                z = (z - mu) * jax.lax.rsqrt(var + NORM_EPS) * nrm["scale"] + nrm["bias"]
            elif self.norm == "dyt":
                z = nrm["scale"] * jnp.tanh(nrm["alpha"] * z) + nrm["bias"]
            out, aux = unit(sp, z, e, lp, capture)
            if drop_key is not None:
                keep = jax.random.bernoulli(jax.random.fold_in(drop_key, l), 1 - self.dropout,
                                            out.shape)
                out = jnp.where(keep, out / (1 - self.dropout), 0.0)
            if residual:
                out = out + h
            return out, (aux, stats)

        def norm_at(l):
            return {k: v[l] for k, v in norm.items()}

        e0 = None if eps is None else eps[0]
        h, (aux0, st0) = layer(self.specs[0], 0, x, k_in, b_in, norm_at(0), e0, layer_learned[0],
                               False, mult["input"])
        outs = [(aux0, st0)]
        if L > 1 and scan:
            sp = self.specs[0]
            xs = (jnp.arange(1, L), k_h, b_h, {k: v[1:] for k, v in norm.items()},
                  None if eps is None else eps[1:], {p: v[1:] for p, v in learned.items()})

            def body(h, xs):
                l, k, b, nrm, e, lp = xs
                return layer(sp, l, h, k, b, nrm, e, lp, self.residual, mult["hidden"])

            h, rest = jax.lax.scan(body, h, xs)
            stacked = jax.tree.map(lambda a, r: jnp.concatenate([a[None], r]), (aux0, st0), rest)
        else:
            for l in range(1, L):
                e = None if eps is None else eps[l]
                h, o = layer(self.specs[l], l, h, k_h[l - 1], b_h[l - 1], norm_at(l), e,
                             layer_learned[l], self.residual, mult["hidden"])
                outs.append(o)
            stacked = jax.tree.map(lambda *a: jnp.stack(a), *outs)
        aux, stats = stacked
        if self.norm == "batch" and train and not self.is_initializing():
            mu, var = stats
            ra_mean.value = BN_MOMENTUM * ra_mean.value + (1 - BN_MOMENTUM) * mu
            ra_var.value = BN_MOMENTUM * ra_var.value + (1 - BN_MOMENTUM) * var
        out = h @ k_out
        logits = (out if mult["output"] == 1.0 else out * mult["output"]) + b_out
        if not capture:
            return logits, None
        return logits, aux


def labels(tree: Mapping[str, jax.Array]) -> dict[str, Role]:
    """Roles of the MLP's parameters: layer 0 is in_*, layers 1.. the stacked hidden_*."""

    def role(name: str) -> Role:
        if name in ("in_kernel", "in_bias"):
            return Role("layer", 0, kernel=name == "in_kernel")
        if name in ("hidden_kernel", "hidden_bias"):
            return Role("layer", 1, stacked=True, kernel=name == "hidden_kernel")
        if name.startswith("hidden"):  # hidden<l>_kernel, hidden<l>_bias (unrolled)
            l, _, kind = name[len("hidden"):].partition("_")
            return Role("layer", int(l), kernel=kind == "kernel")
        if name in ("out_kernel", "out_bias"):
            return Role("out", kernel=name == "out_kernel")
        head, _, param = name.partition("_")
        if head == "act":  # one value per layer, stacked
            return Role("act", 0, stacked=True, param=param)
        if head.startswith("act") and head[3:].isdigit():
            return Role("act", int(head[3:]), param=param)
        if name == "dyt_alpha":
            return Role("norm", 0, stacked=True, param="dyt_alpha")
        return Role("other")  # normalisation scale and bias [depth, W]

    return {k: role(k) for k in tree}


def sites(depth=4, width=64, norm="none", dropout=0.0, residual=False, scan_layers="auto",
           glu_width="match", dyt_alpha0=0.5, param="sp", base_width=64):
    choice("param", param, param_lib.PARAMS)
    positive_int("base_width", base_width)
    if scan_layers not in (True, False, "auto"):
        raise ModelError(f"model.scan_layers must be true, false or auto, got {scan_layers!r}")
    positive_int("width", width)
    choice("norm", norm, NORMS)
    choice("glu_width", glu_width, GLU_WIDTHS)
    fraction("dropout", dropout)
    if isinstance(dyt_alpha0, bool) or not isinstance(dyt_alpha0, (int, float)):
        raise ModelError(f"model.dyt_alpha0 must be a number, got {dyt_alpha0!r}")
    return positive_int("depth", depth)


NORMS = ("none", "layer", "batch", "dyt")


def num_params(units: int, *, gated: bool, depth: int, fan_in: int, num_classes: int,
               norm: str, doubled: bool = False) -> int:
    """Trained parameters of the MLP with `units` units per layer (closed form)."""
    cols = 2 * units if gated else units
    rows = 2 * units if doubled else units  # the width of h, which the next kernel takes
    n = fan_in * cols + cols + (depth - 1) * (rows * cols + cols) + rows * num_classes
    n += num_classes
    if norm != "none":
        n += 2 * depth * cols + (depth if norm == "dyt" else 0)
    return n


def units(width: int, gated: bool, glu_width: str, *, doubled: bool = False, **shape) -> int:
    """Units per layer: `width`, or for a gated or doubled unit under glu_width=match the
    width whose model has the parameter count of the elementwise model of `width` (for deep
    stacks about width / sqrt(2); Shazeer's 2/3 holds for a single d -> d_ff -> d block)."""
    if not (gated or doubled) or glu_width == "same":
        return width
    target = num_params(width, gated=False, **shape)
    return matched_units(lambda u: num_params(u, gated=gated, doubled=doubled, **shape),
                         target, width)


def build(*, specs, num_classes, input_shape, init, depth=4, width=64, norm="none", dropout=0.0,
          residual=False, scan_layers="auto", glu_width="match", dyt_alpha0=0.5, param="sp",
          base_width=64):
    """An MLP with `depth` hidden layers of `width` units (gated or doubled: see `units`),
    under width parametrization `param` with reference width `base_width` (models.param)."""

    scheme = initializers.Scheme(*init)
    doubled = is_doubled(tuple(specs))
    w = units(width, is_gated(tuple(specs)), glu_width, doubled=doubled, depth=depth,
              fan_in=math.prod(input_shape), num_classes=num_classes, norm=norm)
    module = MLP(depth=depth, width=w, num_classes=num_classes, specs=tuple(specs),
                 init_name=scheme.name, distribution=scheme.distribution, gain=scheme.gain,
                 sigma_w2=scheme.sigma_w2, sigma_b2=scheme.sigma_b2, norm=norm,
                 dyt_alpha0=float(dyt_alpha0), dropout=dropout, residual=bool(residual),
                 scan_layers=scan_layers, parametrization=param, base_width=int(base_width))
    lr_factor = None if param == "sp" else param_lib.lr_factors(param, w / base_width, kind)
    return Model(module=module, specs=tuple(specs), labels=labels, lr_factor=lr_factor)


def kind(role: Role) -> str:
    """The parametrization's kind of an MLP parameter (models.param.KINDS)."""
    if role.group == "layer":
        return ("input" if role.layer == 0 and not role.stacked else "hidden") if role.kernel \
            else "vector"
    if role.group == "out":
        return "output" if role.kernel else "fixed"
    if role.group == "other":  # normalisation scale and bias [depth, W]
        return "vector"
    return "fixed"  # activation parameters, DyT's alpha

