"""LPIPS-style perceptual distance from a small VGG-style network with LOCAL frozen weights.

Never downloads anything and is never required: the VAE task uses it only when
`vae.perceptual_path` points at a file. The network's shape is read from the file itself:

  stage{s}.conv{j}.kernel   [3, 3, C_in, C_out]  (HWIO; torch's OIHW transposed (2, 3, 1, 0))
  stage{s}.conv{j}.bias     [C_out]
  lin{s}                    [C_s] optional, non-negative per-channel weights (LPIPS "lin" layers);
                            absent -> plain channel mean
  shift, scale              [3] optional input normalisation: x' = (x - shift) / scale

Stages s = 0, 1, ... run 3x3 conv + ReLU layers j = 0, 1, ...; features are tapped at the end of
each stage and a 2x2 max-pool separates stages (VGG16's features.* map onto 5 stages of 2,2,3,3,3
convs). Frames are scored independently: video [B, T, H, W, 3] in [-1, 1].
The distance: for each stage, unit-normalise features over channels, squared difference,
weighted channel sum (lin) or mean, spatial mean; summed over stages; mean over frames and batch.
"""
from __future__ import annotations

import re
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sora_jax.models.local_weights import read_arrays, write_arrays

_NAME = re.compile(r"^stage(\d+)\.conv(\d+)\.(kernel|bias)$")


class PerceptualNet(NamedTuple):
  stages: tuple  # per stage: tuple of (kernel, bias)
  lins: tuple  # per stage: [C] weights or None
  shift: jax.Array
  scale: jax.Array


def load_perceptual(path: str) -> PerceptualNet:
  """Reads weights (layout in the module docstring) into a frozen PerceptualNet."""
  arrays = read_arrays(path, "vae.perceptual_path")
  layers: dict[int, dict[int, dict[str, np.ndarray]]] = {}
  for name, value in arrays.items():
    m = _NAME.match(name)
    if m:
      layers.setdefault(int(m[1]), {}).setdefault(int(m[2]), {})[m[3]] = value
  if not layers or sorted(layers) != list(range(len(layers))):
    raise ValueError(f"{path}: expected arrays named stage{{s}}.conv{{j}}.kernel/bias with "
                     f"stages 0..N-1, found {sorted(arrays)[:8]}")
  stages, lins = [], []
  c_in = 3
  for s in range(len(layers)):
    convs = []
    for j in range(len(layers[s])):
      if j not in layers[s] or set(layers[s][j]) != {"kernel", "bias"}:
        raise ValueError(f"{path}: stage{s}.conv{j} needs both .kernel and .bias")
      k, b = layers[s][j]["kernel"], layers[s][j]["bias"]
      if k.ndim != 4 or k.shape[2] != c_in or b.shape != (k.shape[3],):
        raise ValueError(f"{path}: stage{s}.conv{j}.kernel has shape {k.shape}; expected "
                         f"[kh, kw, {c_in}, C_out] (HWIO) with bias [C_out]")
      convs.append((jnp.asarray(k, jnp.float32), jnp.asarray(b, jnp.float32)))
      c_in = k.shape[3]
    stages.append(tuple(convs))
    lin = arrays.get(f"lin{s}")
    lins.append(None if lin is None else jnp.asarray(lin, jnp.float32).reshape(-1))
  shift = jnp.asarray(arrays.get("shift", np.zeros(3)), jnp.float32)
  scale = jnp.asarray(arrays.get("scale", np.ones(3)), jnp.float32)
  return PerceptualNet(tuple(stages), tuple(lins), shift, scale)


def features(net: PerceptualNet, x: jax.Array) -> list[jax.Array]:
  """Per-stage features of images x [N, H, W, 3] in [-1, 1]."""
  h = (x - net.shift) / net.scale
  feats = []
  for s, convs in enumerate(net.stages):
    if s > 0 and min(h.shape[1:3]) >= 2:
      h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    for k, b in convs:
      h = jax.lax.conv_general_dilated(h, k, (1, 1), "SAME",
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"))
      h = jax.nn.relu(h + b)
    feats.append(h)
  return feats


def perceptual_distance(net: PerceptualNet, a: jax.Array, b: jax.Array) -> jax.Array:
  """Scalar LPIPS-style distance between videos/images [..., H, W, 3] in [-1, 1]."""
  shape = a.shape[-3:]
  a = a.reshape((-1,) + shape).astype(jnp.float32)
  b = b.reshape((-1,) + shape).astype(jnp.float32)
  fa, fb = features(net, a), features(net, b)
  total = jnp.zeros((), jnp.float32)
  for lin, x, y in zip(net.lins, fa, fb):
    x = x * jax.lax.rsqrt(jnp.sum(x * x, axis=-1, keepdims=True) + 1e-10)
    y = y * jax.lax.rsqrt(jnp.sum(y * y, axis=-1, keepdims=True) + 1e-10)
    d = jnp.square(x - y)
    d = jnp.sum(d * lin, axis=-1) if lin is not None else jnp.mean(d, axis=-1)
    total = total + jnp.mean(d)
  return total


def save_perceptual(path: str, arrays: dict[str, np.ndarray]) -> None:
  """Writes weights in the layout above (.safetensors or .npz), e.g. after converting VGG16."""
  write_arrays(path, arrays)
