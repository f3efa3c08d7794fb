"""Shapes and shardings of a run without data or compute: `sora-jax shardings --config=...`.

Everything comes from `jax.eval_shape` on an abstract system (its VAE params are shapes too), so
an XL model on a laptop costs nothing to inspect: no data is read, no VAE runs, no latent scale
is estimated and the config is not changed.
"""
from __future__ import annotations

import jax

from sora_jax import config as config_lib
from sora_jax import runs
from sora_jax.parallel import mesh as mesh_lib
from sora_jax.parallel import rules as rules_lib
from sora_jax.systems.vae import VAESystem
from sora_jax.train import optimizer as optim_lib
from sora_jax.train import state as state_lib


def abstract_recipe(config):
  """(the object the train step differentiates, its abstract global batch), from shapes only."""
  b = int(config.data.batch_size)
  if config.task == "vae":
    from sora_jax.train.vae_training import VAETraining
    recipe = VAETraining(config, VAESystem(config))
    return recipe, {"video": recipe.system.example_video(batch=b)}
  if config.task == "t2v":
    from sora_jax.train.t2v_training import T2VTraining
    system = runs.t2v_system(config, abstract=True)
    return T2VTraining(config, system), system.example_batch(batch=b)
  raise config_lib.ConfigError(f"config.task={config.task!r} has no train state to inspect; "
                               "use `sora-jax flops` for class_image")


def abstract_state(config, mesh=None):
  """(recipe, boxed abstract TrainState, mesh, rules) for a config."""
  config_lib.validate(config, jax.device_count(), jax.process_count())
  mesh = mesh or mesh_lib.make_mesh(config.mesh)
  rules = rules_lib.rules_for(config.rules)
  recipe, batch = abstract_recipe(config)
  boxed_params = jax.eval_shape(recipe.init, jax.random.key(0), batch)
  tx, _ = optim_lib.make_optimizer(config.optim, config.train.steps, boxed_params,
                                   players=recipe.players,
                                   frozen=getattr(recipe, "frozen", ()))
  boxed = jax.eval_shape(state_lib.make_init_fn(recipe, tx), jax.random.key(0), batch)
  return recipe, boxed, mesh, rules


def describe_config(config, mesh=None) -> str:
  """Every parameter's path, shape, dtype, PartitionSpec and logical names, one per line."""
  _, boxed, mesh, rules = abstract_state(config, mesh)
  shardings = rules_lib.state_shardings(boxed, mesh, rules)
  n = state_lib.param_count(boxed.params)
  header = (f"# task={config.task} mesh={dict(mesh.shape)} rules={config.rules} "
            f"params={n:,} (from shapes only: no data read, no VAE run)")
  return header + "\n" + rules_lib.describe_shardings(boxed.params, shardings.params, rules)
