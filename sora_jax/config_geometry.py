"""Video geometry of a config: which frame counts and resolutions the VAE and the DiT's patch can
represent, the nearest valid ones for an error message or a requested aspect ratio, and the
size mixes packed into token budgets (data.sizes, data.pack_tokens). Validation raises
ConfigError naming the key (or the user's flag) and the fix; `sora_jax.config` re-exports all
of it as part of `validate`.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import re
from typing import Mapping

import ml_collections as mlc

from sora_jax.config_sections import ConfigError


def check_video_geometry(config: mlc.ConfigDict,
                         flag_names: Mapping[str, str] | None = None) -> None:
  """Frames of the form 1 + tc*k; resolution divisible by the VAE; latent grid by the patch.

  `flag_names` maps config keys to the words the caller's user typed, so that an error about a
  sample-time size can say `--frames=16` instead of `config.data.frames=16`; e.g.
  {"data.frames": "--frames", "data.height": "--height", "data.width": "--width"}. Keys it does
  not map are named `config.<key>`.
  """
  names = dict(flag_names or {})

  def n(key: str) -> str:
    return names.get(key, f"config.{key}")

  d, v = config.data, config.get("vae")
  for key in ("frames", "height", "width", "batch_size"):
    if int(d[key]) < 1:
      raise ConfigError(f"{n('data.' + key)}={d[key]} must be a positive integer")
  if v is None:
    return
  tc, sc = int(v.temporal_compression), int(v.spatial_compression)
  if tc not in (1, 2, 4):
    raise ConfigError(f"{n('vae.temporal_compression')}={tc} must be 1, 2 or 4")
  if sc not in (4, 8, 16):
    raise ConfigError(f"{n('vae.spatial_compression')}={sc} must be 4, 8 or 16")
  steps = size_steps(config)
  if (d.frames - 1) % tc:
    ok = ", ".join(str(1 + tc * k) for k in range(6))
    raise ConfigError(
        f"{n('data.frames')}={d.frames} is not 1 + {tc}k for vae.temporal_compression={tc} "
        f"(the first frame is encoded on its own); use one of {ok}, ...")
  for key in ("height", "width"):
    if d[key] % sc:
      raise ConfigError(
          f"{n('data.' + key)}={d[key]} is not divisible by vae.spatial_compression={sc}; "
          f"use {_nearest(d[key], *steps[key])}")
  levels, p = len(v.channel_mult), int(v.get("patch_size", 1))
  if p < 1 or sc % p:
    raise ConfigError(f"{n('vae.patch_size')}={p} must divide vae.spatial_compression={sc}")
  need = max(int(math.log2(sc // p)), int(math.log2(tc))) + 1
  if levels != need:
    raise ConfigError(
        f"{n('vae.channel_mult')} has {levels} levels but spatial_compression={sc} with "
        f"patch_size={p} and temporal_compression={tc} needs {need} (one per downsample plus "
        f"the input level)")
  if int(v.latent_channels) < 1:
    raise ConfigError(f"{n('vae.latent_channels')}={v.latent_channels} must be ≥ 1")
  model = config.get("model")
  if model is not None and config.get("task") == "t2v":
    grid = (1 + (d.frames - 1) // tc, d.height // sc, d.width // sc)
    axes = ("frames", "height", "width")
    for g, p, name in zip(grid, model.patch, axes):
      if g % p:
        size = n("data." + name).removeprefix("config.")
        raise ConfigError(
            f"{n('model.patch')}={tuple(model.patch)} does not divide the latent grid {grid}: "
            f"latent {name} {g} is not a multiple of {p} ({size}={d[name]}); use {size}="
            f"{_nearest(d[name], *steps[name])} or change model.patch")


def size_steps(config: mlc.ConfigDict) -> dict[str, tuple[int, int]]:
  """The representable sizes as (step, offset): size = offset + k * step, k >= 1. Height and
  width: multiples of VAE compression x the DiT's patch (t2v); frames: latent frames
  1 + (frames - 1) / tc a multiple of the temporal patch, so offset 1 - tc (k = 1: one frame)."""
  v, model = config.get("vae"), config.get("model")
  tc = int(v.temporal_compression) if v is not None else 1
  sc = int(v.spatial_compression) if v is not None else 1
  patch = tuple(model.patch) if model is not None and config.get("task") == "t2v" else (1, 1, 1)
  return {"frames": (tc * int(patch[0]), 1 - tc), "height": (sc * int(patch[1]), 0),
          "width": (sc * int(patch[2]), 0)}


def _nearest(value: int, step: int, offset: int = 0) -> str:
  """'48 or 64': the representable sizes (offset + k * step, k >= 1) either side of `value`."""
  lo = max(offset + (value - offset) // step * step, offset + step)
  hi = max(offset + -(-(value - offset) // step) * step, offset + step)
  return str(lo) if lo == hi else f"{lo} or {hi}"


def snap(value: float, step: int, offset: int = 0) -> int:
  """The representable size nearest `value` (offset + k * step, k >= 1)."""
  return int(offset + max(1, round((value - offset) / step)) * step)


@dataclasses.dataclass(frozen=True)
class Size:
  frames: int
  height: int
  width: int
  weight: float = 1.0

  @property
  def shape(self) -> tuple[int, int, int]:
    return (self.frames, self.height, self.width)

  def __str__(self) -> str:
    return f"{self.frames}x{self.height}x{self.width}"


def parse_sizes(spec: str, key: str = "config.data.sizes") -> tuple[Size, ...]:
  """'17x64x64:2,1x64x64' -> (Size(17, 64, 64, 2.0), Size(1, 64, 64, 1.0)); errors name `key`."""
  sizes = []
  for part in (p.strip() for p in str(spec).split(",")):
    m = re.fullmatch(r"(\d+)x(\d+)x(\d+)(?::([0-9.]+))?", part)
    if not m:
      raise ConfigError(f"{key}: {part!r} is not FRAMESxHEIGHTxWIDTH[:WEIGHT], e.g. "
                       f"'17x64x112:2,1x64x64'")
    f, h, w = (int(g) for g in m.groups()[:3])
    weight = float(m.group(4)) if m.group(4) else 1.0
    if min(f, h, w) < 1 or not weight > 0:
      raise ConfigError(f"{key}: {part!r} needs positive frames, height, width and weight")
    sizes.append(Size(f, h, w, weight))
  if not sizes:
    raise ConfigError(f"{key} is empty; give at least one FRAMESxHEIGHTxWIDTH")
  return tuple(sizes)


def check_packing(config: mlc.ConfigDict) -> None:
  """data.sizes / data.pack_tokens: every size representable by the VAE and patch, and short
  enough for the token budget; packing trains from the latent cache with the flow objective."""
  d = config.data
  sizes, budget = str(d.get("sizes", "") or ""), int(d.get("pack_tokens", 0) or 0)
  if not sizes and not budget:
    return
  if budget < 0 or int(d.get("pack_clips", 0) or 0) < 0:
    raise ConfigError(f"config.data.pack_tokens={budget} and pack_clips={d.get('pack_clips')} "
                      "must be >= 0 (0 = no packing / as many clips as fit)")
  if sizes and not budget:
    raise ConfigError("config.data.sizes needs config.data.pack_tokens > 0: clips of mixed sizes "
                      "are trained packed into rows of that many tokens")
  if config.get("task") != "t2v":
    raise ConfigError(f"config.data.pack_tokens is for task='t2v', not {config.get('task')!r}")
  if not d.cache_dir:
    raise ConfigError("config.data.pack_tokens needs config.data.cache_dir: packed clips are "
                      "encoded once into the latent cache (one VAE compile per size)")
  if config.diffusion.objective != "flow":
    raise ConfigError(f"config.data.pack_tokens needs diffusion.objective='flow', not "
                      f"{config.diffusion.objective!r}")
  tc, sc = int(config.vae.temporal_compression), int(config.vae.spatial_compression)
  for size in parse_sizes(sizes or f"{d.frames}x{d.height}x{d.width}"):
    one = copy.deepcopy(config)
    with one.unlocked():
      one.data.frames, one.data.height, one.data.width = size.shape
    try:
      check_video_geometry(one)
    except ConfigError as e:
      raise ConfigError(f"config.data.sizes entry {size}: {e}") from None
    grid = (1 + (size.frames - 1) // tc, size.height // sc, size.width // sc)
    tokens = math.prod(g // p for g, p in zip(grid, config.model.patch))
    if tokens > budget:
      raise ConfigError(f"config.data.sizes entry {size} is {tokens} tokens, more than "
                        f"config.data.pack_tokens={budget}; raise pack_tokens to >= {tokens} or "
                        "drop that size")


def parse_out_conv(text: str) -> tuple[int, ...]:
  """model.out_conv 'KTxKHxKW' (odd sizes, e.g. '1x3x3') -> (kt, kh, kw); '' -> ().

  Here rather than in models/dit.py so that config.py (layer 0) can check it."""
  if not text:
    return ()
  try:
    kernel = tuple(int(k) for k in str(text).lower().split("x"))
  except ValueError:
    kernel = ()
  if len(kernel) != 3 or any(k < 1 or k % 2 == 0 for k in kernel):
    raise ValueError(f"model.out_conv={text!r} must be '' (none) or KTxKHxKW with odd sizes, "
                     "e.g. '1x3x3' (space) or '3x3x3' (space and time)")
  return kernel
