"""Exported weights: a run directory reduced to `config.json` + `params.msgpack` (EMA params).

Orbax checkpoints carry optimizer moments and the data iterator (3-4x the weights); an export is
what ships (e.g. the README demo's model) and what `TextToVideo` / `load_vae` read when there is
no checkpoint. Every loader goes through `load_params`, which takes either form.
"""
from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np
from flax import serialization

PARAMS_FILE = "params.msgpack"


def has_export(run_dir: str) -> bool:
  return os.path.exists(os.path.join(run_dir, PARAMS_FILE))


def load_params(run_dir: str, abstract: Any, key: str = "ema_params",
                step: int | None = None) -> Any:
  """Params for `abstract` (a tree of ShapeDtypeStructs) from an export or a checkpoint."""
  if has_export(run_dir):
    with open(os.path.join(run_dir, PARAMS_FILE), "rb") as f:
      raw = serialization.msgpack_restore(f.read())
    params = serialization.from_state_dict(abstract, raw)
    _check_shapes(abstract, params, run_dir)
    return jax.tree.map(lambda a, x: np.asarray(x, a.dtype), abstract, params)
  from sora_jax.train import checkpoint as ckpt_lib
  ckpt = ckpt_lib.Checkpointer(run_dir, async_save=False)
  if ckpt.latest_step() is None:
    raise FileNotFoundError(f"{run_dir} has neither {PARAMS_FILE} nor a checkpoint")
  return ckpt.restore_params(abstract, step=step, key=key)


def _check_shapes(abstract, params, run_dir):
  for (path, a), x in zip(jax.tree_util.tree_flatten_with_path(abstract)[0],
                          jax.tree.leaves(params)):
    if tuple(a.shape) != tuple(np.shape(x)):
      raise ValueError(f"{run_dir}/{PARAMS_FILE}: {jax.tree_util.keystr(path)} has shape "
                       f"{np.shape(x)} but the config builds {a.shape}; config and weights differ")


def export(run_dir: str, out_dir: str, abstract: Any, *, dtype=np.float32,
           config_updates: dict | None = None) -> str:
  """Writes out_dir/config.json (with `config_updates`) and out_dir/params.msgpack."""
  params = load_params(run_dir, abstract)
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(run_dir, "config.json")) as f:
    cfg = json.load(f)
  for dotted, value in (config_updates or {}).items():
    node = cfg
    *parents, last = dotted.split(".")
    for p in parents:
      node = node[p]
    node[last] = value
  with open(os.path.join(out_dir, "config.json"), "w") as f:
    json.dump(cfg, f, indent=2)
  host = jax.tree.map(lambda x: np.asarray(x, dtype), params)
  with open(os.path.join(out_dir, PARAMS_FILE), "wb") as f:
    f.write(serialization.msgpack_serialize(serialization.to_state_dict(host)))
  return out_dir


def resolve_run_path(path: str, relative_to: str) -> str:
  """A run path in a config may be relative to the run that names it (shipped exports)."""
  if not path or os.path.isabs(path) or os.path.exists(path):
    return path
  candidate = os.path.normpath(os.path.join(relative_to, path))
  return candidate if os.path.exists(candidate) else path
