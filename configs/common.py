"""Shared pieces of every config: argument parsing, and the section builders re-exported.

A config file's `get_config(arg)` calls `parse_arg(arg, **defaults)` once; the ablation axes
(patch size, resolution, model size, objective...) are its arguments, not copies of the file.
Every key, its default and its allowed values live in one place, the section builders of
sora_jax/config_sections.py (`data_section(...)`, `vae_section(...)`, ...), from which
sora_jax/config.py derives the schema it validates against.
"""
from __future__ import annotations

import ml_collections as mlc

from sora_jax.config_sections import (  # noqa: F401  (re-exported for the config files)
    channel_mult_for, data_section, diffusion_section, mesh_section, model_section,
    optim_section, sample_section, text_section, train_section, vae_section)


def parse_arg(arg: str | None, lazy: bool = False, **defaults) -> mlc.ConfigDict:
  """Parses "key=value,flag" into a ConfigDict typed like `defaults`.

  A bare `flag` sets a bool to True. Values are converted to the type of the default
  (int, float, bool, str); keys not in `defaults` raise unless `lazy`.
  """
  out = mlc.ConfigDict(dict(defaults))
  if not arg:
    return out
  for item in arg.split(","):
    item = item.strip()
    if not item:
      continue
    key, eq, value = item.partition("=")
    key = key.strip()
    if key not in defaults and not lazy:
      raise ValueError(
          f"config argument {key!r} is not known; known arguments: "
          f"{', '.join(sorted(defaults))}")
    if not eq:
      out[key] = True if key not in defaults else _convert(defaults[key], "true", key)
      continue
    out[key] = _convert(defaults.get(key, value), value.strip(), key)
  return out


def _convert(default, value: str, key: str):
  if isinstance(default, bool):
    if value.lower() in ("1", "true", "yes", "on"):
      return True
    if value.lower() in ("0", "false", "no", "off"):
      return False
    raise ValueError(f"config argument {key!r} expects true/false, got {value!r}")
  for typ in (int, float):
    if isinstance(default, typ):
      try:
        return typ(value)
      except ValueError:
        raise ValueError(f"config argument {key!r} expects {typ.__name__}, got {value!r}") from None
  return value


def parse_triple(text: str, key: str) -> tuple[int, int, int]:
  """'1x2x2' -> (1, 2, 2)."""
  parts = str(text).lower().split("x")
  try:
    vals = tuple(int(p) for p in parts)
  except ValueError:
    vals = ()
  if len(vals) != 3 or min(vals) < 1:
    raise ValueError(f"config argument {key!r} expects TxHxW like 1x2x2, got {text!r}")
  return vals


def parse_res(text, key: str = "res") -> tuple[int, int]:
  """'64' -> (64, 64); '64x112' -> (64, 112) as (height, width)."""
  parts = str(text).lower().split("x")
  try:
    vals = tuple(int(p) for p in parts)
  except ValueError:
    vals = ()
  if len(vals) == 1:
    vals = vals * 2
  if len(vals) != 2 or min(vals) < 1:
    raise ValueError(f"config argument {key!r} expects H or HxW like 64x112, got {text!r}")
  return vals


# Shorthands with the arguments the configs (and tests) most often vary.
def data_config(*, frames: int, height: int, width: int, batch_size: int,
                **overrides) -> mlc.ConfigDict:
  return data_section(frames=frames, height=height, width=width, batch_size=batch_size,
                      **overrides)


def mesh_config(data: int = -1, fsdp: int = 1, tensor: int = 1, context: int = 1) -> mlc.ConfigDict:
  return mesh_section(data=data, fsdp=fsdp, tensor=tensor, context=context)


def optim_config(lr: float, steps: int | None = None, warmup: int = 0,
                 **overrides) -> mlc.ConfigDict:
  """`steps` is unused (the schedule's length is train.steps); kept for callers that pass it."""
  del steps
  return optim_section(lr=lr, warmup_steps=warmup, **overrides)


def train_config(steps: int, **overrides) -> mlc.ConfigDict:
  return train_section(steps=steps, **overrides)


def shrink_for_local(c) -> None:
  """`runlocal`: a few steps, with logs, checkpoints, videos and evals every few, for CPU tests."""
  c.train.steps = min(c.train.steps, 6)
  c.optim.warmup_steps = 1
  c.train.log_every = 2
  c.train.ckpt_every = 3
  c.train.sample_every = 3
  c.train.eval_every = 3
  c.train.eval_num = 2     # = the two sample prompts: one compiled sampler serves both
