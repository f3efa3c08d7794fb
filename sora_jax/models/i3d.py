"""I3D (Inception-v1 inflated to 3D; Carreira & Zisserman 2017), the network behind FVD, as a
pure function of LOCAL frozen weights.

The weights are a flat {name: array} file (.npz or .safetensors) in the naming and layout of the
widely used PyTorch port's state dict (pytorch-i3d, `rgb_imagenet.pt`): e.g.
`Conv3d_1a_7x7.conv3d.weight` [O, I, kT, kH, kW], `Mixed_3b.b1b.bn.running_var` [O],
`logits.conv3d.weight` / `.bias`. Convert such a checkpoint once, where torch is installed:

  import numpy as np, torch
  sd = torch.load("rgb_imagenet.pt", map_location="cpu")
  np.savez("i3d.npz", **{k: v.numpy() for k, v in sd.items() if v.dtype.is_floating_point})

Layer widths come from the file, so the same code runs a tiny random network in the tests. The
graph (kernel sizes, strides, TF-style 'same' padding, BatchNorm eps 1e-3 in inference form) is
the original's. Input: video [B, T, H, W, 3] in [-1, 1] (FVD uses 224 x 224, 16 frames).
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sora_jax.models.local_weights import read_arrays

BN_EPS = 1e-3
# (endpoint, kind, kernel, stride); 'unit' = conv + BN + ReLU, 'mixed' = an Inception module.
_GRAPH = (
    ("Conv3d_1a_7x7", "unit", (7, 7, 7), (2, 2, 2)),
    ("MaxPool3d_2a_3x3", "pool", (1, 3, 3), (1, 2, 2)),
    ("Conv3d_2b_1x1", "unit", (1, 1, 1), (1, 1, 1)),
    ("Conv3d_2c_3x3", "unit", (3, 3, 3), (1, 1, 1)),
    ("MaxPool3d_3a_3x3", "pool", (1, 3, 3), (1, 2, 2)),
    ("Mixed_3b", "mixed", None, None),
    ("Mixed_3c", "mixed", None, None),
    ("MaxPool3d_4a_3x3", "pool", (3, 3, 3), (2, 2, 2)),
    ("Mixed_4b", "mixed", None, None),
    ("Mixed_4c", "mixed", None, None),
    ("Mixed_4d", "mixed", None, None),
    ("Mixed_4e", "mixed", None, None),
    ("Mixed_4f", "mixed", None, None),
    ("MaxPool3d_5a_2x2", "pool", (2, 2, 2), (2, 2, 2)),
    ("Mixed_5b", "mixed", None, None),
    ("Mixed_5c", "mixed", None, None),
)
# Inception branches: name -> kernel; b3a is a 3x3x3 max-pool (stride 1) before b3b.
_BRANCHES = {"b0": (1, 1, 1), "b1a": (1, 1, 1), "b1b": (3, 3, 3), "b2a": (1, 1, 1),
             "b2b": (3, 3, 3), "b3b": (1, 1, 1)}
_UNIT_KEYS = ("conv3d.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var")


class I3D(NamedTuple):
  units: dict  # unit name -> (kernel DHWIO, scale [O], shift [O]): BN folded into an affine
  logits: tuple | None  # (weight [C, classes], bias [classes]) or None


def unit_names() -> list[str]:
  names = []
  for endpoint, kind, _, _ in _GRAPH:
    if kind == "unit":
      names.append(endpoint)
    elif kind == "mixed":
      names += [f"{endpoint}.{b}" for b in _BRANCHES]
  return names


def load_i3d(path: str) -> I3D:
  """Frozen I3D from a converted state dict (module docstring); logits if the file has them."""
  arrays = read_arrays(path, "fvd weights")
  missing = [f"{u}.{k}" for u in unit_names() for k in _UNIT_KEYS if f"{u}.{k}" not in arrays]
  if missing:
    raise ValueError(f"{path}: not an I3D state dict in pytorch-i3d naming; missing "
                     f"{len(missing)} arrays, e.g. {missing[:3]} (see sora_jax/models/i3d.py)")
  return from_state_dict(arrays)


def from_state_dict(arrays: dict[str, np.ndarray]) -> I3D:
  units = {}
  for u in unit_names():
    w, g, b, mean, var = (np.asarray(arrays[f"{u}.{k}"], np.float32) for k in _UNIT_KEYS)
    scale = g / np.sqrt(var + BN_EPS)
    units[u] = (jnp.asarray(w.transpose(2, 3, 4, 1, 0)), jnp.asarray(scale),
                jnp.asarray(b - mean * scale))
  logits = None
  if "logits.conv3d.weight" in arrays:
    w = np.asarray(arrays["logits.conv3d.weight"], np.float32)
    logits = (jnp.asarray(w.reshape(w.shape[0], -1).T),
              jnp.asarray(arrays["logits.conv3d.bias"], np.float32))
  return I3D(units, logits)


def _same_pads(size: tuple[int, ...], kernel, stride) -> list[tuple[int, int]]:
  """TensorFlow 'same' padding, as the PyTorch port computes it from the input size."""
  pads = []
  for s, k, st in zip(size, kernel, stride):
    total = max(k - st, 0) if s % st == 0 else max(k - s % st, 0)
    pads.append((total // 2, total - total // 2))
  return pads


def _unit(net: I3D, name: str, x: jax.Array, stride=(1, 1, 1)) -> jax.Array:
  w, scale, shift = net.units[name]
  pads = _same_pads(x.shape[1:4], w.shape[:3], stride)
  y = jax.lax.conv_general_dilated(x, w, stride, pads,
                                   dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))
  return jax.nn.relu(y * scale + shift)


def _max_pool(x: jax.Array, kernel, stride) -> jax.Array:
  # The port pads with zeros (F.pad), not -inf; after a ReLU the two agree.
  pads = [(0, 0), *_same_pads(x.shape[1:4], kernel, stride), (0, 0)]
  x = jnp.pad(x, pads)
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, *kernel, 1), (1, *stride, 1),
                               "VALID")


def _mixed(net: I3D, name: str, x: jax.Array) -> jax.Array:
  b0 = _unit(net, f"{name}.b0", x)
  b1 = _unit(net, f"{name}.b1b", _unit(net, f"{name}.b1a", x))
  b2 = _unit(net, f"{name}.b2b", _unit(net, f"{name}.b2a", x))
  b3 = _unit(net, f"{name}.b3b", _max_pool(x, (3, 3, 3), (1, 1, 1)))
  return jnp.concatenate([b0, b1, b2, b3], axis=-1)


def features(net: I3D, video: jax.Array) -> dict[str, jax.Array]:
  """{'pool': the last Inception block averaged over time and space [B, C], 'logits' [B, K]
  when the weights have them} for `video` [B, T, H, W, 3] in [-1, 1]."""
  x = video.astype(jnp.float32)
  for endpoint, kind, kernel, stride in _GRAPH:
    if kind == "unit":
      x = _unit(net, endpoint, x, stride)
    elif kind == "pool":
      x = _max_pool(x, kernel, stride)
    else:
      x = _mixed(net, endpoint, x)
  out = {"pool": x.mean(axis=(1, 2, 3))}
  if net.logits is not None:
    w, b = net.logits
    out["logits"] = out["pool"] @ w + b   # the port's 1x1x1 conv on the pooled map
  return out
