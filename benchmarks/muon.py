"""Muon's update on a real model's parameters: optax.contrib.muon against train/muon.py (the same
update, Newton-Schulz on the Gram matrix), alternating rounds in one process.

  python benchmarks/muon.py [--config demo:stage=vae] [--rounds 5] [--json]

Prints, per implementation, the median seconds of one jitted `tx.update` over the config's whole
parameter tree, XLA's FLOP count for it, and the largest difference between the two updates.
"""
from __future__ import annotations

import argparse
import importlib
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sora_jax import runs
from sora_jax.train import muon, setup
from sora_jax.train import optimizer as optim_lib


def abstract_params(config_arg: str):
  """The boxed parameter tree (shapes only) that config `module:arg` trains."""
  module, _, arg = config_arg.partition(":")
  config = importlib.import_module(f"configs.{module}").get_config(arg)
  if config.task == "vae":
    d = config.data
    config, recipe = setup.recipe_for(config)
    video = jax.ShapeDtypeStruct((1, d.frames, d.height, d.width, 3), jnp.float32)
    return jax.eval_shape(recipe.init, jax.random.key(0), {"video": video})
  system = runs.t2v_system(config, abstract=True)
  return jax.eval_shape(system.init, jax.random.key(0), system.example_batch())


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--config", default="demo:stage=vae", help="configs/<module>.py:<arg>")
  ap.add_argument("--rounds", type=int, default=5)
  ap.add_argument("--json", action="store_true")
  a = ap.parse_args()
  boxed = abstract_params(a.config)
  dims = optim_lib.muon_dimension_numbers(boxed)
  params = jax.tree.map(lambda s: jnp.asarray(np.random.default_rng(0).standard_normal(s.shape),
                                              s.dtype), runs.unbox(boxed))
  grads = jax.tree.map(lambda p: p * 0.01 + 0.1, params)
  txs = {"optax.contrib.muon": optax.contrib.muon(1e-3, muon_weight_dimension_numbers=dims),
         "train/muon.py (Gram)": muon.muon(1e-3, 1e-3, dims)}
  compiled, out = {}, {}
  for name, tx in txs.items():
    state = tx.init(params)
    fn = jax.jit(tx.update).lower(grads, state, params).compile()
    cost = fn.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    compiled[name] = (fn, state, float(cost.get("flops", 0.0)))
    out[name] = fn(grads, state, params)[0]
  times = {name: [] for name in txs}
  for _ in range(a.rounds):
    for name, (fn, state, _) in compiled.items():   # alternating: load on the box hits both alike
      jax.block_until_ready(fn(grads, state, params))
      t = time.perf_counter()
      jax.block_until_ready(fn(grads, state, params))
      times[name].append(time.perf_counter() - t)
  a_up, b_up = out.values()
  diff = max(float(jnp.max(jnp.abs(x - y)) / (jnp.max(jnp.abs(x)) + 1e-12))
             for x, y in zip(jax.tree.leaves(a_up), jax.tree.leaves(b_up)))
  n_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
  rows = [dict(impl=name, seconds=statistics.median(times[name]), gflop=compiled[name][2] / 1e9,
               params_m=n_params / 1e6, config=a.config) for name in txs]
  if a.json:
    for r in rows:
      print(json.dumps(r))
    return
  print(f"{a.config}: {n_params / 1e6:.1f}M params; largest relative difference between the "
        f"two updates {diff:.1e}")
  print("| implementation | update (s, median) | GFLOP (XLA) |\n|---|---:|---:|")
  for r in rows:
    print(f"| {r['impl']} | {r['seconds']:.3f} | {r['gflop']:.1f} |")


if __name__ == "__main__":
  main()
