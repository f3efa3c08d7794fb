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


def make_optimizer(optim_cfg, total_steps: int) -> tuple[optax.GradientTransformation,
                                                         optax.Schedule]:
  schedule = lr_schedule(optim_cfg, total_steps)
  tx = optax.chain(
      optax.clip_by_global_norm(optim_cfg.grad_clip) if optim_cfg.grad_clip > 0
      else optax.identity(),
      optax.adamw(schedule, b1=optim_cfg.b1, b2=optim_cfg.b2, eps=optim_cfg.eps,
                  weight_decay=optim_cfg.weight_decay,
                  # Decay matrices only: norms, biases and embeddings' scales stay put.
                  mask=lambda p: jax.tree.map(lambda x: x.ndim > 1, p)),
  )
  return tx, schedule


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
