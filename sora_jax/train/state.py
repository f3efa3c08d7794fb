"""Train state, optimizer from config, and sharded initialisation from shapes.

State is created from shapes first (jax.eval_shape → logical shardings → jax.jit(init,
out_shardings=...)), so a model larger than one device is born sharded.
"""
from __future__ import annotations

from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any
  ema_params: Any


def lr_schedule(optim_cfg, total_steps: int) -> optax.Schedule:
  warmup = int(optim_cfg.warmup_steps)
  if optim_cfg.schedule == "constant":
    return optax.linear_schedule(0.0, optim_cfg.lr, max(warmup, 1)) if warmup else \
        optax.constant_schedule(optim_cfg.lr)
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=optim_cfg.lr, warmup_steps=warmup,
      decay_steps=max(total_steps, warmup + 1),
      end_value=optim_cfg.lr * optim_cfg.min_lr_ratio)


OPTIMIZERS = ("adamw", "muon")
# Logical axis names that are never a matrix's row or column space: stacked (scanned) layers are
# orthogonalised one by one, and embedding tables stay with AdamW as Muon's authors advise.
_MUON_BATCH_AXES = ("layers",)
_MUON_SKIP_AXES = ("vocab", "classes")


def muon_dimension_numbers(params: Any) -> Any:
  """Per-leaf MuonDimensionNumbers (None = AdamW) from each parameter's logical axis names.

  A kernel's last axis is its output; every other axis is reduced over (a conv kernel
  [kt, kh, kw, cin, cout] is the matrix [kt*kh*kw*cin, cout]) except scanned-layer axes.
  Vectors (biases, norm scales) and embedding tables get None. Boxes are kept so the result
  has exactly the params' tree structure.
  """
  from optax.contrib import MuonDimensionNumbers
  is_box = lambda x: isinstance(x, nn.meta.AxisMetadata)  # noqa: E731

  def dims(x):
    value = x.unbox(apply_constraint=False) if is_box(x) else x
    names = tuple(getattr(x, "names", None) or (None,) * value.ndim)
    matrix = [i for i, n in enumerate(names) if n not in _MUON_BATCH_AXES]
    if len(matrix) < 2 or any(n in _MUON_SKIP_AXES for n in names):
      out = None
    else:
      out = MuonDimensionNumbers(reduction_axis=tuple(matrix[:-1]), output_axis=matrix[-1])
    return x.replace_boxed(out) if is_box(x) else out

  return jax.tree.map(dims, params, is_leaf=is_box)


def make_optimizer(optim_cfg, total_steps: int) -> tuple[optax.GradientTransformation,
                                                         optax.Schedule]:
  """optim.name: 'adamw' (default) or 'muon' (Newton-Schulz orthogonalised momentum for every
  matrix and conv kernel at lr `optim.muon_lr`, AdamW at `optim.lr` for the rest).

  Muon equalises the learning speed of all directions of a weight matrix; on the procedural
  world, whose pixels are dominated by one dark mean colour, that is the difference between a
  VAE stuck at the mean-colour plateau and one that learns texture (benchmarks/RESULTS.md).
  """
  schedule = lr_schedule(optim_cfg, total_steps)
  clip = (optax.clip_by_global_norm(optim_cfg.grad_clip) if optim_cfg.grad_clip > 0
          else optax.identity())
  # Decay matrices only: norms, biases and embeddings' scales stay put.
  decay_mask = lambda p: jax.tree.map(lambda x: x.ndim > 1, p)  # noqa: E731
  name = optim_cfg.get("name", "adamw")
  if name == "adamw":
    opt = optax.adamw(schedule, b1=optim_cfg.b1, b2=optim_cfg.b2, eps=optim_cfg.eps,
                      weight_decay=optim_cfg.weight_decay, mask=decay_mask)
  elif name == "muon":
    scale = float(optim_cfg.muon_lr) / float(optim_cfg.lr)
    opt = optax.contrib.muon(
        lambda step: schedule(step) * scale, adam_learning_rate=schedule,
        weight_decay=optim_cfg.weight_decay, adam_b1=optim_cfg.b1, adam_b2=optim_cfg.b2,
        adam_weight_decay=optim_cfg.weight_decay,
        muon_weight_dimension_numbers=muon_dimension_numbers)
  else:
    raise ValueError(f"optim.name={name!r}; use one of {OPTIMIZERS}")
  return optax.chain(clip, opt), schedule


def unbox(tree: Any, apply_constraint: bool = True) -> Any:
  """Strips nn.Partitioned boxes. Pass apply_constraint=False for abstract (eval_shape) trees:
  the sharding constraint only makes sense on traced values."""
  is_box = lambda x: isinstance(x, nn.meta.AxisMetadata)  # noqa: E731
  return jax.tree.map(lambda x: x.unbox(apply_constraint=apply_constraint) if is_box(x) else x,
                      tree, is_leaf=is_box)


def make_init_fn(task, tx: optax.GradientTransformation) -> Callable:
  """init(rng, batch) -> TrainState whose leaves are logically *boxed* (nn.Partitioned).

  Optimizer moments and EMA are built from the boxed params, so every leaf carries the logical
  names of the parameter it mirrors and gets the same sharding.
  """

  def init(rng, batch):
    boxed = task.init(rng, batch)
    return TrainState(step=jnp.zeros((), jnp.int32), params=boxed, opt_state=tx.init(boxed),
                      ema_params=jax.tree.map(jnp.copy, boxed))

  return init


def param_count(params: Any) -> int:
  return int(sum(x.size for x in jax.tree.leaves(unbox(params, apply_constraint=False))))
