"""Task registry: what is trained (config.task) → the object that knows its model and loss.

A task implements:
  init(rng, batch) -> boxed params            prepare(host_batch, mesh) -> device batch
  loss(params, batch, rng, step) -> (loss, metrics)
  visualize(params, batch, rng) -> {name: uint8 [T,H,W,3]}
"""
from __future__ import annotations


def make_task(config):
  if config.task == "vae":
    from sora_jax.train.vae_task import VAETask
    return VAETask(config)
  if config.task == "t2v":
    from sora_jax.train.t2v_task import T2VTask
    return T2VTask(config)
  raise ValueError(f"config.task={config.task!r} has no trainer; use 'vae' or 't2v'")
