"""Shared pieces of every config: argument parsing and the default sections.

A config file's `get_config(arg)` calls `parse_arg(arg, **defaults)` once; the ablation axes
(patch size, resolution, model size, objective...) are its arguments, not copies of the file.
"""
from __future__ import annotations

import ml_collections as mlc


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


def data_config(*, frames: int, height: int, width: int, batch_size: int, fps: float = 8.0,
                name: str = "shapes_world", caption: str = "mixed",
                text_len: int = 64) -> mlc.ConfigDict:
  return mlc.ConfigDict(dict(
      name=name,                # shapes_world | video_folder
      source="procedural",      # procedural (rendered on the fly, infinite) | tfds (prepared builder)
      builder_config="",        # shapes_world builder config; "" = derived from the resolution
      data_dir="",              # tfds data_dir; "" = ~/tensorflow_datasets
      folder="",                # video_folder: the user's directory of videos
      frames=frames, height=height, width=width, fps=fps,
      caption=caption,          # short | detailed | mixed
      text_len=text_len,        # tokens per caption (byte-level tokenizer)
      batch_size=batch_size,    # global batch size over all processes
      split="train",
      eval_split="test",
      shuffle_seed=0,
      num_workers=0,            # grain worker processes; 0 = in-process
      num_epochs=0,             # 0 = repeat forever
      cache_dir="",             # t2v: encode cache_clips clips once and train on their latents
      cache_clips=4096,
  ))


def mesh_config(data: int = -1, fsdp: int = 1, tensor: int = 1, context: int = 1) -> mlc.ConfigDict:
  return mlc.ConfigDict(dict(data=data, fsdp=fsdp, tensor=tensor, context=context,
                             distributed=False))


def optim_config(lr: float, steps: int, warmup: int, weight_decay: float = 0.0,
                 ema_decay: float = 0.999, name: str = "adamw",
                 muon_lr: float = 0.02) -> mlc.ConfigDict:
  # name: adamw | muon. muon_lr is Muon's rate for matrices/kernels (its usual 0.02); lr stays
  # the AdamW rate of everything else, and both follow the same warmup + cosine shape.
  return mlc.ConfigDict(dict(
      name=name, muon_lr=muon_lr, lr=lr, b1=0.9, b2=0.99, eps=1e-8, weight_decay=weight_decay,
      warmup_steps=warmup, schedule="cosine", min_lr_ratio=0.1, grad_clip=1.0,
      ema_decay=ema_decay,
  ))


def train_config(steps: int, log_every: int = 50, ckpt_every: int = 500,
                 sample_every: int = 1000) -> mlc.ConfigDict:
  return mlc.ConfigDict(dict(
      steps=steps, log_every=log_every, ckpt_every=ckpt_every, sample_every=sample_every,
      keep_checkpoints=3, async_checkpoint=True, dry_run=False,
  ))


def shrink_for_local(c) -> None:
  """`runlocal`: a few steps, with logging, checkpoints and videos every few, for CPU tests."""
  c.train.steps = min(c.train.steps, 6)
  c.optim.warmup_steps = 1
  c.train.log_every = 2
  c.train.ckpt_every = 3
  c.train.sample_every = 3
