"""`train.init_from`: start a run from another run's weights (fine-tuning).

The new run's model params and their EMA start from the EMA weights of `init_from` (a workdir
with checkpoints, or an export such as sora_jax/assets/demo/vae); everything else is fresh: step
0, the optimizer's moments and schedule, the data order, and trainer-only players such as the
VAE's critic. Typical use: continue a VAE trained on one world on another, or with an adversarial
loss switched on, in a new workdir:

  sora-jax train --config=configs/demo.py:stage=vae_critic \\
      --config.train.init_from=workdirs/demo/vae --workdir=workdirs/demo/vae_critic

A run that resumes from its own checkpoint ignores init_from: it only decides step 0.

An option that only adds parameters which leave the model's output unchanged at init
(`_ADDITIVE`: model.layout_readout's zero-initialised readout, model.layout_prior's side head,
model.out_conv's zero-initialised residual convolution)
may be switched on over a source run without it: the added modules start fresh and the loaded
model computes exactly what the source did until they learn something.
"""
from __future__ import annotations

import logging
import os
from typing import Any

import jax
import numpy as np

from sora_jax import runs
from sora_jax.config import ConfigError
from sora_jax.train import setup as setup_lib

log = logging.getLogger(__name__)

# Differences init_from tolerates: the critic is trainer-only (never loaded), and a text-to-video
# run may name its VAE by another path (an export of the same run).
_TOLERATED = ("vae.adv_weight", "vae.disc_channels", "vae.disc_layers", "vae_workdir")
# Options whose only effect is to add modules that leave the output unchanged at init: switching
# one on (never off) over a source run leaves these subtrees of the model's params fresh.
_ADDITIVE = {"model.layout_readout": ("layout_query", "layout_readout"),
             "model.layout_prior": ("layout_prior",),
             "model.out_conv": ("out_conv",)}


def _added(old, new) -> dict[str, tuple[str, ...]]:
  """{option: the param subtrees it adds} for every additive option `new` switches on."""
  out = {}
  for key, subtrees in _ADDITIVE.items():
    section, name = key.split(".")
    if not old.get(section, {}).get(name, False) and new.get(section, {}).get(name, False):
      out[key] = subtrees
  return out


def check(config) -> None:
  """Refuses, before anything compiles, an init_from that cannot give this run its weights."""
  src = config.train.get("init_from", "")
  if not src:
    return
  if not os.path.isdir(src):
    raise ConfigError(f"config.train.init_from={src!r} is not a directory; pass a run's workdir "
                      "or an export (a directory with config.json)")
  try:
    old = runs.load_config(src)
  except runs.RunError as e:
    raise ConfigError(f"config.train.init_from: {e}") from None
  if old.task != config.task:
    raise ConfigError(f"config.train.init_from={src!r} is a {old.task} run; this run trains "
                      f"{config.task}: pass a {config.task} run")
  tolerated = _TOLERATED + tuple(_added(old, config))
  diff = [d for d in setup_lib.architecture_diff(old, config) if not d.startswith(tolerated)]
  if diff:
    raise ConfigError(f"config.train.init_from={src!r} has another architecture "
                      f"({'; '.join(diff[:4])}{'; ...' if len(diff) > 4 else ''}): its weights "
                      "do not fit this model; match those keys or start from scratch")


def _source_params(config) -> dict:
  """{top-level params key: tree} of init_from's EMA weights, keyed like the recipe's params."""
  src = config.train.init_from
  if config.task == "vae":
    return {"vae": runs.open_vae(src)[1]}
  return dict(runs.open_t2v(src)[1])


def apply(state, config, shardings) -> Any:
  """`state` (fresh, step 0) with its params and EMA params replaced by init_from's weights."""
  src = config.train.init_from
  loaded = _source_params(config)
  fresh_subtrees = sum(_added(runs.load_config(src), config).values(), ())
  params, ema = dict(state.params), dict(state.ema_params)
  for key, tree in loaded.items():
    if key not in params:
      raise ConfigError(f"config.train.init_from={src!r}: its params hold {key!r}, this run's "
                        f"do not ({', '.join(params)})")
    added = [k for k in fresh_subtrees if k in params[key] and k not in tree]
    if added:   # the new modules keep their fresh (zero-output) init; the rest is loaded
      tree = dict(tree, **{k: params[key][k] for k in added})
    try:
      same = all(jax.tree.leaves(jax.tree.map(lambda a, b: a.shape == np.shape(b),
                                              params[key], tree)))
    except ValueError:   # another tree structure
      same = False
    if not same:
      raise ConfigError(f"config.train.init_from={src!r}: the {key!r} params differ in shape "
                        "from this run's; the architectures do not match")

    def put(fresh, x, sharding):
      x = np.asarray(x, fresh.dtype)
      return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])

    params[key] = jax.tree.map(put, params[key], tree, shardings.params[key])
    ema[key] = jax.tree.map(put, ema[key], tree, shardings.ema_params[key])
  log.info("init_from %s: %s from its EMA weights; optimizer, step and %s fresh", src,
           ", ".join(loaded), ", ".join(k for k in params if k not in loaded) or "nothing else")
  return state.replace(params=type(state.params)(params), ema_params=type(state.ema_params)(ema))

