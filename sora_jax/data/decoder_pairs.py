"""Pairs (latent a generator made, clip it should show) for training a decoder on a DiT's own
latents (train/decoder_refining.py).

A decoder trained only on its encoder's latents meets the DiT's off that manifold: after SDEdit
they differ from the encoder's latents of the same clip by ~40 % of their magnitude. Each clip of
the data is noised to one of `strengths` and denoised by the generator under its own caption;
the latents and clips are stored in one .npz (no pickle) and served through grain with the same
shuffle / per-process sharding / checkpointable iterator as the latent cache. The generator
comes in as a function: the data layer knows no model.
"""
from __future__ import annotations

import logging
from typing import Callable, Sequence

import numpy as np
from tqdm import tqdm

from sora_jax.data import latent_cache, pipeline

log = logging.getLogger(__name__)
KEYS = ("latents", "video", "caption", "strength")

# generate(video uint8 [T, H, W, 3], caption, strength, seed) -> latents [t, h, w, c]
GenerateFn = Callable[[np.ndarray, str, float, int], np.ndarray]


def build(data_cfg, split: str, num_clips: int, generate: GenerateFn, path: str, *,
          strengths: Sequence[float], seed: int = 0) -> str:
  """Generates `num_clips` pairs from the clips of `split` (short captions: what users prompt
  with), strength cycled clip by clip, and writes them to `path` atomically."""
  cfg = data_cfg.copy_and_resolve_references()
  with cfg.unlocked():
    cfg.batch_size, cfg.caption = 1, "short"
  it = pipeline.make_iterator(cfg, split, seed=seed, process_index=0, process_count=1,
                              num_epochs=1)
  parts: dict[str, list] = {k: [] for k in KEYS}
  for i in tqdm(range(num_clips), desc="generating decoder pairs"):
    batch = next(it)
    video, caption = np.asarray(batch["video"][0]), str(batch["caption"][0])
    s = float(strengths[i % len(strengths)])
    parts["latents"].append(np.asarray(generate(video, caption, s, seed + i), np.float32))
    parts["video"].append(video)
    parts["caption"].append(caption)
    parts["strength"].append(s)
  arrays = {k: np.stack(v) if k in ("latents", "video") else np.asarray(v)
            for k, v in parts.items()}
  latent_cache.save_npz(path, arrays)
  log.info("generated %d decoder pairs %s at %s", num_clips, arrays["latents"].shape[1:], path)
  return path


class PairSource:
  """Random access over a pairs file (grain RandomAccessDataSource protocol)."""

  def __init__(self, path: str):
    with np.load(path, allow_pickle=False) as f:
      missing = [k for k in ("latents", "video") if k not in f.files]
      if missing:
        raise ValueError(f"{path} is not a decoder-pairs file (no {', '.join(missing)}); "
                         "delete it and it is generated again")
      self.arrays = {k: f[k] for k in ("latents", "video")}

  def __len__(self) -> int:
    return len(self.arrays["latents"])

  def __getitem__(self, i: int) -> dict:
    return {k: v[i] for k, v in self.arrays.items()}


def make_dataset(path: str, batch_size: int, *, seed: int, process_index: int | None = None,
                 process_count: int | None = None) -> grain.IterDataset:
  """Shuffled, repeated, per-process batches {'latents', 'video'} (as latent_cache's)."""
  return latent_cache.source_dataset(PairSource(path), batch_size, seed=seed,
                                     process_index=process_index, process_count=process_count)
