"""Parameter and multiply-accumulate counts of the DiT: analytic formula and XLA's own count.

MACs, not FLOPs: one multiply-add is one MAC (the DiT paper's "Gflops" are MACs; DiT-XL/2 at
256x256 is 118.6). XLA reports FLOPs (2 per MAC), halved here. XLA's cost analysis counts a
while-loop (nn.scan) body once, so the XLA count of a deep model is extrapolated from unrolled
depth-1 and depth-2 copies, which is exact because every layer costs the same.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sora_jax.models import dit as dit_lib
from sora_jax.models import layers


def count_params(params_or_shapes: Any) -> int:
  """Number of scalars in a pytree of arrays or ShapeDtypeStructs (boxed or not)."""
  leaves = jax.tree.leaves(nn.unbox(params_or_shapes))
  return int(sum(int(np.prod(x.shape)) for x in leaves))


def forward_macs_xla(apply_fn: Callable, *args) -> float:
  """XLA's count for one call of apply_fn(*args) (arrays or ShapeDtypeStructs), in MACs."""
  cost = jax.jit(apply_fn).lower(*args).compile().cost_analysis()
  if isinstance(cost, (list, tuple)):  # older jax returns one dict per computation
    cost = cost[0]
  return float(cost["flops"]) / 2.0


def forward_macs_formula(model_cfg, num_tokens: int, context_len: int = 0, *,
                         in_channels: int | None = None, out_channels: int | None = None,
                         text_width: int | None = None, cond_groups: int = 1) -> float:
  """Analytic MACs of one sample's forward pass.

  num_tokens: spacetime tokens N; context_len: text tokens L (cond='text'); in/out_channels and
  text_width add the patch embedding, final projection and text projection when given;
  cond_groups: adaLN vectors per sample (1, or the token frames with per-frame timesteps).
  """
  r = dit_lib.resolve_model_config(model_cfg)
  d, depth, n = r["width"], r["depth"], int(num_tokens)
  hidden = layers.mlp_hidden(d, r["mlp"], float(r["mlp_ratio"]))
  text = r["cond"] == "text" and context_len > 0
  per_layer = 4 * n * d * d                                   # q, k, v, out projections
  per_layer += 2 * n * n * d                                  # QK^T and AV over all heads
  per_layer += (3 if r["mlp"] == "swiglu" else 2) * n * d * hidden
  per_layer += cond_groups * d * 6 * d                        # adaLN modulation
  if text:
    per_layer += 2 * n * d * d + 2 * context_len * d * d      # q, out; k, v of the text
    per_layer += 2 * n * context_len * d                      # QK^T and AV against text
  pvol = int(np.prod(r["patch"]))
  total = depth * per_layer
  total += 256 * d + d * d                                    # timestep MLP (per group: tiny)
  total += cond_groups * d * 2 * d                            # final adaLN
  if in_channels:
    total += n * pvol * in_channels * d
    out_ch = out_channels or (2 * in_channels if r["learn_sigma"] else in_channels)
    total += n * d * pvol * out_ch
  if text and text_width:
    total += context_len * (text_width * d + d * d) + d * d  # caption MLP and pooled vector
  if text and r["layout_readout"]:   # position queries (sin-cos -> d) reading the caption
    total += n * d * d + 2 * n * d * d + 2 * context_len * d * d + 2 * n * context_len * d
  return float(total)


def _inputs(model: dit_lib.DiT, latent_shape, context_len: int, text_width: int | None):
  t, h, w, c = latent_shape
  sds = jax.ShapeDtypeStruct
  x, tt = sds((1, t, h, w, c), jnp.float32), sds((1,), jnp.float32)
  if model.cond == "class":
    return (x, tt), dict(labels=sds((1,), jnp.int32))
  return (x, tt), dict(context=sds((1, context_len, text_width), jnp.float32),
                       context_mask=sds((1, context_len), jnp.bool_))


def model_macs_xla(model: dit_lib.DiT, latent_shape, context_len: int = 0,
                   text_width: int | None = None) -> float:
  """XLA's MACs for one sample, exact for any depth (see the module docstring)."""
  counts = []
  for depth in (1, 2):
    m = dataclasses.replace(model, depth=depth, scan_layers=False, remat_policy="none")
    args, kwargs = _inputs(m, latent_shape, context_len, text_width)
    variables = _abstract_init(m, args, kwargs)
    keys = tuple(kwargs)
    fn = lambda v, x, t, *kv, m=m, keys=keys: m.apply(v, x, t, **dict(zip(keys, kv)))
    counts.append(forward_macs_xla(fn, variables, *args, *kwargs.values()))
  return counts[0] + (model.depth - 1) * (counts[1] - counts[0])


def _abstract_init(model, args, kwargs):
  keys = tuple(kwargs)
  init = lambda x, t, *kv: model.init(jax.random.key(0), x, t, **dict(zip(keys, kv)))
  return jax.eval_shape(init, *args, *kwargs.values())


def latent_geometry(config) -> tuple[tuple[int, int, int, int], int, int | None]:
  """(latent (T, H, W, C), text length, text width) of a t2v / class_image config."""
  d, v, m = config.data, config.vae, config.model
  tc, sc = int(v.temporal_compression), int(v.spatial_compression)
  channels = int(m.get("in_channels", 0) or 0) or int(v.latent_channels)
  latent = (1 + (int(d.frames) - 1) // tc, int(d.height) // sc, int(d.width) // sc, channels)
  if m.get("cond", "text") == "class":
    return latent, 0, None
  text = config.get("text")
  return latent, int(d.text_len), int(text.width) if text is not None else None


def flops_report(config, *, xla: bool = True) -> list[dict]:
  """One row per model of the config: params, tokens and GMACs per sample (formula, XLA)."""
  latent, context_len, text_width = latent_geometry(config)
  model = dit_lib.dit_from_config(config.model, in_channels=latent[3], text_width=text_width)
  args, kwargs = _inputs(model, latent, context_len, text_width)
  shapes = _abstract_init(model, args, kwargs)
  grid = tuple(s // p for s, p in zip(latent[:3], model.patch))
  tokens = int(np.prod(grid))
  row = dict(
      model=f"DiT-{config.model.variant}/{'x'.join(map(str, model.patch))}",
      width=model.width, depth=model.depth, heads=model.heads,
      latent=latent, tokens=tokens, context_len=context_len,
      params=count_params(shapes["params"]),
      gmacs_formula=forward_macs_formula(config.model, tokens, context_len,
                                         in_channels=latent[3],
                                         out_channels=model.out_channels,
                                         text_width=text_width) / 1e9,
  )
  if xla:
    row["gmacs_xla"] = model_macs_xla(model, latent, context_len, text_width) / 1e9
  return [row]
