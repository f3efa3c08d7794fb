"""Train state and sharded initialisation from shapes (the optimizer: train/optimizer.py).

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

from sora_jax.parallel.rules import unbox  # noqa: F401  (state_lib.unbox for callers)


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any
  ema_params: Any


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
