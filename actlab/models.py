"""Flax models that take their activation(s) as an argument.

Every model exposes the same small protocol to the engine (see `Model`):
`apply(params, x, eps, capture)` returns logits and, when asked, the per-layer
pre-activations z, outputs h and derivatives phi'(z) stacked on a leading layer
axis; `eps` is a zero perturbation added to each z so that one backward pass
yields d loss / d z for every layer alongside the weight gradients.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from actlab import init as init_lib
from actlab.activations import Spec


class MLP(nn.Module):
    """depth hidden layers of `width` units; identical layers run under lax.scan.

    Parameters: in_kernel [D, W], in_bias [W], hidden_kernel [depth-1, W, W],
    hidden_bias [depth-1, W], out_kernel [W, C], out_bias [C], and for learnable
    activations act_<p> [depth] (one value per layer) or act<l>_<p> when the
    layers use different activations.
    """

    depth: int
    width: int
    num_classes: int
    specs: tuple[Spec, ...]
    init_name: str = "he"
    distribution: str = "normal"
    gain: float = 1.0
    scan_layers: bool = True  # False unrolls the identical layers (same numbers, slower compile)

    @property
    def homogeneous(self) -> bool:
        return all(s == self.specs[0] for s in self.specs)

    @nn.compact
    def __call__(self, x, eps=None, capture: bool = False):
        x = x.reshape((x.shape[0], -1))
        L, W = self.depth, self.width
        kinit = init_lib.kernel_init(self.init_name, self.distribution, self.gain)
        k_in = self.param("in_kernel", kinit, (x.shape[-1], W))
        b_in = self.param("in_bias", nn.initializers.zeros, (W,))
        if L > 1:
            sinit = init_lib.kernel_init(self.init_name, self.distribution, self.gain,
                                         stacked=True)
            k_h = self.param("hidden_kernel", sinit, (L - 1, W, W))
            b_h = self.param("hidden_bias", nn.initializers.zeros, (L - 1, W))
        oinit = init_lib.kernel_init("glorot" if self.init_name != "orthogonal" else "orthogonal")
        k_out = self.param("out_kernel", oinit, (W, self.num_classes))
        b_out = self.param("out_bias", nn.initializers.zeros, (self.num_classes,))

        if self.homogeneous:
            sp = self.specs[0]
            learned = {p: self.param(f"act_{p}", nn.initializers.constant(v), (L,))
                       for p, v in sp.learned.items()}
            per_layer = [{p: a[0] for p, a in learned.items()}]
        else:
            per_layer = [
                {p: self.param(f"act{l}_{p}", nn.initializers.constant(v), ())
                 for p, v in sp.learned.items()}
                for l, sp in enumerate(self.specs)
            ]

        def layer(sp, h, k, b, e, lp):
            z = h @ k + b
            if e is not None:
                z = z + e
            out = sp(z, **lp)
            aux = (z, out, sp.derivative(z, **lp)) if capture else None
            return out, aux

        e0 = None if eps is None else eps[0]
        h, aux0 = layer(self.specs[0], x, k_in, b_in, e0, per_layer[0])
        auxs = [aux0]
        if L > 1 and self.homogeneous and self.scan_layers:
            sp = self.specs[0]
            e_rest = None if eps is None else eps[1:]
            xs = (k_h, b_h, e_rest, {p: a[1:] for p, a in learned.items()})

            def body(h, xs):
                k, b, e, lp = xs
                return layer(sp, h, k, b, e, lp)

            h, aux_rest = jax.lax.scan(body, h, xs)
            if capture:
                aux = jax.tree.map(lambda a, r: jnp.concatenate([a[None], r]), aux0, aux_rest)
        elif L > 1:
            for l in range(1, L):
                e = None if eps is None else eps[l]
                lp = ({p: v[l] for p, v in learned.items()} if self.homogeneous
                      else per_layer[l])
                h, aux_l = layer(self.specs[l], h, k_h[l - 1], b_h[l - 1], e, lp)
                auxs.append(aux_l)
            if capture:
                aux = jax.tree.map(lambda *a: jnp.stack(a), *auxs)
        elif capture:
            aux = jax.tree.map(lambda a: a[None], aux0)
        logits = h @ k_out + b_out
        if not capture:
            return logits, None
        z, hs, dphi = aux
        return logits, {"z": z, "h": hs, "dphi": dphi}


def mlp_layer_sqnorms(tree: Mapping[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
    """Squared L2 norm per hidden layer ([depth], kernel and bias) and of the output layer."""
    first = jnp.sum(tree["in_kernel"] ** 2) + jnp.sum(tree["in_bias"] ** 2)
    per_layer = first[None]
    if "hidden_kernel" in tree:
        rest = jnp.sum(tree["hidden_kernel"] ** 2, (1, 2)) + jnp.sum(tree["hidden_bias"] ** 2, 1)
        per_layer = jnp.concatenate([per_layer, rest])
    out = jnp.sum(tree["out_kernel"] ** 2) + jnp.sum(tree["out_bias"] ** 2)
    return per_layer, out


@dataclasses.dataclass(frozen=True)
class Model:
    """A built model plus the functions the engine needs from it."""

    module: nn.Module
    specs: tuple[Spec, ...]
    num_layers: int
    width: int
    layer_sqnorms: Callable[[Mapping[str, jax.Array]], tuple[jax.Array, jax.Array]]

    def init(self, key: jax.Array, x: jax.Array):
        return self.module.init(key, x)["params"]

    def apply(self, params, x, eps=None, capture: bool = False):
        return self.module.apply({"params": params}, x, eps, capture)

    def eps_shape(self, batch: int) -> tuple[int, ...]:
        return (self.num_layers, batch, self.width)

    def activation_params(self, params: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
        """Learned activation parameters as metric entries, e.g. prelu_alpha -> [depth]."""
        out: dict[str, jax.Array] = {}
        if all(s == self.specs[0] for s in self.specs):
            for p in self.specs[0].learned:
                out[f"{self.specs[0].name}_{p}"] = params[f"act_{p}"]
        else:
            for l, sp in enumerate(self.specs):
                for p in sp.learned:
                    out[f"{sp.name}_{p}/{l}"] = params[f"act{l}_{p}"]
        return out


def build_mlp(specs: tuple[Spec, ...], num_classes: int, depth: int, width: int,
              init_name: str = "he", distribution: str = "normal", gain: float = 1.0,
              scan_layers: bool = True) -> Model:
    """An MLP Model with `depth` hidden layers of `width` units."""
    module = MLP(depth=depth, width=width, num_classes=num_classes, specs=specs,
                 init_name=init_name, distribution=distribution, gain=gain,
                 scan_layers=scan_layers)
    return Model(module=module, specs=specs, num_layers=depth, width=width,
                 layer_sqnorms=mlp_layer_sqnorms)


_BUILDERS = {"mlp": build_mlp}


def names() -> list[str]:
    """Known model names."""
    return sorted(_BUILDERS)


def build(name: str, **kwargs) -> Model:
    """Build model `name`."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown model '{name}'; known: {', '.join(names())}")
    return _BUILDERS[name](**kwargs)
