"""Will a sampling request fit? An estimate made before anything compiles.

The train step's memory comes from XLA's analysis of the compiled step (train/loop.check_fits);
sampling checks earlier, from a formula, so an impossible size is refused in a second with the
largest size that would fit — not after minutes of compiling, with a RESOURCE_EXHAUSTED of
53 TB. The formula errs high: the batch is doubled for classifier-free guidance, attention
scores are materialised (XLA's attention on CPU does that), and the one-pass VAE decode holds a
few full-resolution activations of its widest level.
"""
from __future__ import annotations

import math

import jax

from sora_jax.parallel import mesh as mesh_lib

# fp32 activation copies a DiT block keeps alive at once (residual, norm, q/k/v, MLP hidden)
_DIT_COPIES = 12
# full-resolution activations of the VAE decoder's widest level alive at once
_VAE_COPIES = 6


def estimate_bytes(system, latent_shape, batch: int = 1) -> int:
  """Peak bytes of sampling `batch` videos of `latent_shape` with `system` (a T2VSystem)."""
  m = system.dit
  n = system.num_tokens(latent_shape)
  width, heads = int(m.width), int(m.heads)
  rows = 2 * batch                                   # the CFG pair
  attention = rows * heads * n * n * 4               # scores of one layer (freed per layer)
  activations = rows * n * width * 4 * _DIT_COPIES
  t, h, w, _ = latent_shape
  v = system.vae.cfg
  chunk = int(v.encode_chunk) or t                   # latent frames decoded at once
  frames = 1 + (min(chunk, t) - 1) * int(v.temporal_compression) if chunk < t else (
      1 + (t - 1) * int(v.temporal_compression))
  s = int(v.spatial_compression)
  vae = batch * frames * (h * s) * (w * s) * int(v.channels) * max(v.channel_mult) * 4 * _VAE_COPIES
  params = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(system.vae_params))
  return int(attention + activations + max(vae, 0) + params)


def available_bytes() -> tuple[int | None, str]:
  """(bytes one device can hold, where the figure came from); host memory on CPU."""
  limit, source = mesh_lib.device_memory_limit()
  if limit is not None:
    return int(limit), source
  try:
    with open("/proc/meminfo") as f:
      info = {line.split(":")[0]: line.split()[1] for line in f}
    return int(info["MemAvailable"]) * 1024, "available host memory"
  except (OSError, KeyError, ValueError):
    return None, ""


def check_fits(t2v, num_frames: int, height: int, width: int, batch: int = 1) -> None:
  """Raises MemoryError naming the largest frame count (at this size) that fits."""
  limit, source = available_bytes()
  if limit is None:
    return
  shape = t2v.system.vae.latent_shape(num_frames, height, width)
  need = estimate_bytes(t2v.system, shape, batch)
  if need <= limit:
    return
  tc = int(t2v.system.vae.cfg.temporal_compression)
  fits = [f for f in (1 + tc * k for k in range(0, max(1, (num_frames - 1) // tc)))
          if estimate_bytes(t2v.system, t2v.system.vae.latent_shape(f, height, width),
                            batch) <= limit]
  hint = (f"at {height}x{width} at most --frames {max(fits)} fits" if fits else
          f"even one frame at {height}x{width} does not fit; lower --height/--width")
  raise MemoryError(
      f"sampling {num_frames}x{height}x{width} needs about {need / 2**30:.3g} GiB but "
      f"{limit / 2**30:.3g} GiB is available ({source}); {hint}"
      + ("" if int(t2v.system.vae.cfg.encode_chunk) else
         ", or decode in chunks with --config.vae.encode_chunk=2") + f" [{math.prod(shape):,} "
      f"latent values, {t2v.system.num_tokens(shape):,} tokens]")
