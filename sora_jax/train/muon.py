"""Muon (optax.contrib.muon's update, state and defaults) with its Newton-Schulz iteration run
on the Gram matrix.

Muon's quintic Newton-Schulz step is X <- aX + b(XX^T)X + c(XX^T)^2 X on the short side of each
m x n update matrix (m <= n). Every iterate is a polynomial in G = X0 X0^T applied to X0:
X_k = M_k X0, so the whole iteration can run on m x m matrices,

  A_k = M_k G M_k^T (= X_k X_k^T),  M_{k+1} = (aI + bA_k + cA_k^2) M_k,

with one m x m x n product to form G and one to apply M_K. G squares X's condition number, so
in float32 one Gram over all five steps drifts from a float64 Newton-Schulz 2-4x more than
optax's float32 iteration does on low-rank momenta; forming G again after two steps (X_2 = M_2 X0,
then three more) brings it back to optax's error (tests/train/test_muon.py). Five steps then
cost 8mmn + ~40m^3 FLOPs instead of 20mmn + 10m^3: for the demo VAE's conv kernels (m = 32-256,
n up to 3456) the orthogonalisation falls from 35 to ~15 GFLOP per step. Near-square matrices
(n < 2.5m) keep optax's iteration, which costs less there.

The optimizer state has exactly optax.contrib.muon's structure, so runs trained with it resume
under this one and the other way round.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax
from optax.contrib import MuonDimensionNumbers, MuonState

NS_COEFFS = (3.4445, -4.775, 2.0315)   # optax.contrib.muon's default quintic
NS_STEPS = 5


def is_dims_leaf(x) -> bool:
  """A leaf of a dimension-numbers tree: None (AdamW) or a Muon matrix spec."""
  return x is None or isinstance(x, MuonDimensionNumbers)


def _axes(spec, ndim: int) -> tuple[int, ...]:
  spec = (spec,) if isinstance(spec, int) else tuple(spec)
  return tuple(a % ndim for a in spec)


def _split_axes(ndim: int, dims: MuonDimensionNumbers):
  """(batch, reduction, output) axes: scanned-layer and other unnamed axes are batch axes."""
  red, out = _axes(dims.reduction_axis, ndim), _axes(dims.output_axis, ndim)
  return tuple(a for a in range(ndim) if a not in red + out), red, out


def _as_matrices(x: jax.Array, dims: MuonDimensionNumbers):
  """x -> [batch, fan_in, fan_out] and the inverse (optax's reshape: each layer's matrix is
  orthogonalised on its own)."""
  batch, red, out = _split_axes(x.ndim, dims)
  perm = batch + red + out
  shape = lambda axes: tuple(x.shape[a] for a in axes)  # noqa: E731
  flat = (math.prod(shape(batch)), math.prod(shape(red)), math.prod(shape(out)))
  inv = tuple(sorted(range(x.ndim), key=lambda i: perm[i]))
  return (x.transpose(perm).reshape(flat),
          lambda y: y.reshape(shape(batch) + shape(red) + shape(out)).transpose(inv))


def newton_schulz_gram(x: jax.Array, coeffs=NS_COEFFS, steps: int = NS_STEPS,
                       eps: float = 1e-8, restart: int = 2) -> jax.Array:
  """Muon's orthogonalisation of one matrix x [m, n] (Frobenius-normalised first, as optax
  does): for a wide matrix (short side m < n / 2.5) through the Gram matrix of its short side,
  formed again after `restart` steps; otherwise optax's iteration, which is then cheaper."""
  transposed = x.shape[0] > x.shape[1]
  if transposed:
    x = x.T
  x = x / (jnp.linalg.norm(x) + eps)
  a, b, c = (jnp.asarray(k, x.dtype) for k in coeffs)
  rows, cols = x.shape
  if 30 * rows >= 12 * cols:   # 8mmn + 40m^3 >= 20mmn + 10m^3: near-square, optax's own iteration
    for _ in range(steps):
      g = x @ x.T
      x = a * x + (b * g + c * (g @ g)) @ x
    return x.T if transposed else x
  eye = jnp.eye(rows, dtype=x.dtype)
  for chunk in (restart, steps - restart) if 0 < restart < steps else (steps,):
    gram, m = x @ x.T, eye
    for _ in range(chunk):
      g = m @ gram @ m.T
      m = (a * eye + b * g + c * (g @ g)) @ m
    x = m @ x
  return x.T if transposed else x


def orthogonalize(x: jax.Array, dims: MuonDimensionNumbers) -> jax.Array:
  flat, back = _as_matrices(x, dims)
  return back(jax.vmap(newton_schulz_gram)(flat))


def _width_scale(u: jax.Array, dims: MuonDimensionNumbers) -> jax.Array:
  """optax's width transfer: sqrt(max(1, fan_out / fan_in))."""
  _, red, out = _split_axes(u.ndim, dims)
  fan_in, fan_out = (math.prod(u.shape[a] for a in axes) for axes in (red, out))
  return jnp.sqrt(jnp.maximum(1.0, fan_out / fan_in)).astype(u.dtype) * u


def _map_muon(fn, updates, dims):
  """fn(update, dims) on the leaves Muon owns. `dims` is a prefix of `updates`: below a dims
  leaf sit the array, its nn.Partitioned box, or (the other partition's leaf) a MaskedNode."""
  def one(d, u):
    return u if d is None else jax.tree.map(lambda leaf: fn(leaf, d), u)
  return jax.tree.map(one, dims, updates, is_leaf=is_dims_leaf)


def scale_by_muon(dims, beta: float = 0.95) -> optax.GradientTransformation:
  """optax.contrib.scale_by_muon (Nesterov momentum, bias-corrected, Frobenius
  preconditioning) with the Gram Newton-Schulz; `dims` has the params' structure."""
  base = optax.contrib.scale_by_muon(ns_coeffs=NS_COEFFS, ns_steps=NS_STEPS, beta=beta)

  def update_fn(updates, state, params=None):
    del params
    mu = optax.tree.update_moment(updates, state.mu, beta, 1)
    count = optax.safe_increment(state.count)
    mu_hat = jax.tree.map(lambda m, g: beta * m + (1 - beta) * g,
                          optax.tree.bias_correction(mu, beta, optax.safe_increment(count)),
                          optax.tree.bias_correction(updates, beta, count))
    return (_map_muon(orthogonalize, mu_hat, dims),
            MuonState(count=count, mu=mu, ns_coeffs=state.ns_coeffs))

  return optax.GradientTransformation(base.init, update_fn)


def scale_by_width(dims) -> optax.GradientTransformation:
  return optax.GradientTransformation(
      optax.init_empty_state,
      lambda updates, state, params=None: (_map_muon(_width_scale, updates, dims), state))


def muon(learning_rate, adam_learning_rate, dims, *, weight_decay: float = 0.0,
         weight_decay_mask=None, adam_b1: float = 0.9, adam_b2: float = 0.999,
         beta: float = 0.95, eps: float = 1e-8) -> optax.GradientTransformation:
  """optax.contrib.muon(..., muon_weight_dimension_numbers=dims, adam_weight_decay=0): Muon on
  the leaves whose dims are not None, AdamW (no decay) on the rest, same state tree."""
  def labels(params):   # per leaf under each dims leaf (inside boxes), as optax labels them
    return jax.tree.map(lambda d, sub: jax.tree.map(lambda _: "adam" if d is None else "muon",
                                                    sub), dims, params, is_leaf=is_dims_leaf)
  return optax.partition(
      {"muon": optax.chain(scale_by_muon(dims, beta), scale_by_width(dims),
                           optax.add_decayed_weights(weight_decay, weight_decay_mask),
                           optax.scale_by_learning_rate(learning_rate)),
       "adam": optax.adamw(adam_learning_rate, b1=adam_b1, b2=adam_b2, eps=eps,
                           weight_decay=0.0, nesterov=True)},
      labels)
