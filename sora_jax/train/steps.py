"""The train step: a pure function (state, batch, rng) -> (state, metrics).

Task-agnostic: a recipe supplies `loss(params, batch, rng, step)`; the step adds the optimizer,
EMA and bookkeeping. Compiled once with explicit in/out shardings and the state donated.
"""
from __future__ import annotations

import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from sora_jax.train.state import TrainState


# Test-only hook: "K" feeds step K a batch whose floating-point entries are NaN, so its loss and
# gradients are non-finite in the very program that trains (no separately compiled variant).
ENV_INJECT_NAN = "SORA_JAX_INJECT_NAN_AT"


def inject_nan_at() -> int | None:
  env = os.environ.get(ENV_INJECT_NAN, "").strip()
  return int(env) if env else None


def nan_batch(batch: dict) -> dict:
  """The batch with every floating-point entry NaN (shardings kept: an elementwise op)."""
  return jax.tree.map(lambda x: x * jnp.nan if jnp.issubdtype(x.dtype, jnp.floating) else x,
                      batch)


def make_train_step(task, tx: optax.GradientTransformation, schedule: optax.Schedule,
                    ema_decay: float) -> Callable:
  def train_step(state: TrainState, batch: dict, rng: jax.Array):
    def loss_fn(params):
      return task.loss(params, batch, rng, state.step)

    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    # EMA warms up (min with (1+step)/(10+step)) so early samples are not dominated by init.
    step = state.step.astype(jnp.float32)
    decay = jnp.minimum(ema_decay, (1.0 + step) / (10.0 + step))
    ema = jax.tree.map(lambda e, p: e + (1.0 - decay) * (p - e).astype(e.dtype),
                       state.ema_params, params)
    grad_norm, param_norm = optax.global_norm(grads), optax.global_norm(params)
    # Checked on every step inside the compiled step (two scalars): a non-finite loss, gradient
    # or updated parameter drops the whole update, so the state — and every checkpoint written
    # from it — stays finite; the loop counts `finite` and halts by policy.
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & jnp.isfinite(param_norm)
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)  # noqa
    metrics = dict(metrics)
    metrics.update(loss=loss, grad_norm=grad_norm, param_norm=param_norm,
                   lr=schedule(state.step), finite=finite.astype(jnp.float32))
    new_state = state.replace(step=state.step + 1, params=keep(params, state.params),
                              opt_state=keep(opt_state, state.opt_state),
                              ema_params=keep(ema, state.ema_params))
    return new_state, metrics

  return train_step


def step_rng(seed: int, step: int) -> jax.Array:
  """The rng of a step depends only on (seed, step): a resumed run draws the same noise."""
  return jax.random.fold_in(jax.random.key(seed), step)


def compile_train_step(train_step: Callable, state: Any, batch: dict, rng: jax.Array, *,
                       state_shardings: Any, batch_shardings: Any, replicated: Any):
  """Lowers and compiles ahead of time so memory and FLOPs are known before step 1."""
  jitted = jax.jit(train_step,
                   in_shardings=(state_shardings, batch_shardings, replicated),
                   out_shardings=(state_shardings, replicated),
                   donate_argnums=0)
  lowered = jitted.lower(state, batch, rng)
  compiled = lowered.compile()
  return jitted, compiled


def compiled_facts(compiled) -> dict[str, float]:
  """Per-device memory (bytes) and FLOPs from XLA's analyses; missing fields are omitted."""
  facts: dict[str, float] = {}
  try:
    mem = compiled.memory_analysis()
    if mem is not None:
      for name in ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes",
                   "generated_code_size_in_bytes", "alias_size_in_bytes"):
        if hasattr(mem, name):
          facts[name] = float(getattr(mem, name))
      facts["peak_bytes_estimate"] = (facts.get("argument_size_in_bytes", 0)
                                      + facts.get("output_size_in_bytes", 0)
                                      + facts.get("temp_size_in_bytes", 0)
                                      - facts.get("alias_size_in_bytes", 0))
  except Exception:  # noqa: BLE001 - some backends have no memory analysis
    pass
  try:
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
      cost = cost[0] if cost else {}
    if cost and "flops" in cost:
      facts["flops"] = float(cost["flops"])
  except Exception:  # noqa: BLE001
    pass
  return facts
