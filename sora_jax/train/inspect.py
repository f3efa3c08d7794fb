"""Shapes and shardings of a run without data or compute: `sora-jax shardings --config=...`.

Everything comes from `jax.eval_shape`, so an XL model on a laptop costs nothing to inspect.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from sora_jax import config as config_lib
from sora_jax.parallel import mesh as mesh_lib
from sora_jax.parallel import rules as rules_lib
from sora_jax.train import state as state_lib
from sora_jax.train.tasks import make_task


def abstract_batch(config, task) -> dict:
  """The global batch the train step sees, as ShapeDtypeStructs."""
  d, b = config.data, int(config.data.batch_size)
  if config.task == "vae":
    return {"video": jax.ShapeDtypeStruct((b, d.frames, d.height, d.width, 3), jnp.float32)}
  if config.task == "t2v":
    L = int(config.text.max_len)
    return {"latents": jax.ShapeDtypeStruct((b, *task.latent_shape), jnp.float32),
            "tokens": jax.ShapeDtypeStruct((b, L), jnp.int32),
            "text_mask": jax.ShapeDtypeStruct((b, L), jnp.bool_)}
  raise ValueError(f"config.task={config.task!r} has no train state to inspect")


def abstract_state(config, mesh=None):
  """(task, boxed abstract TrainState, mesh, rules) for a config."""
  config_lib.validate(config, jax.device_count(), jax.process_count())
  mesh = mesh or mesh_lib.make_mesh(config.mesh)
  rules = rules_lib.rules_for(config.rules)
  task = make_task(config)
  tx, _ = state_lib.make_optimizer(config.optim, config.train.steps)
  boxed = jax.eval_shape(state_lib.make_init_fn(task, tx), jax.random.key(0),
                         abstract_batch(config, task))
  return task, boxed, mesh, rules


def describe_config(config, mesh=None) -> str:
  """Every parameter's path, shape, dtype, PartitionSpec and logical names, one per line."""
  _, boxed, mesh, rules = abstract_state(config, mesh)
  shardings = rules_lib.state_shardings(boxed, mesh, rules)
  n = state_lib.param_count(boxed.params)
  header = (f"# task={config.task} mesh={dict(mesh.shape)} rules={config.rules} "
            f"params={n:,}")
  return header + "\n" + rules_lib.describe_shardings(boxed.params, shardings.params, rules)
