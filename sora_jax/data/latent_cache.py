"""Pre-computed latents: encode a fixed set of clips once, then train on them.

A frozen VAE encoder applied to every batch can cost more than the DiT step it feeds (on a CPU,
17-frame 64x64 clips encode slower than a small DiT trains). The cache stores latents, tokens,
masks and captions in one .npz (no pickle) and serves them through a grain pipeline with the
same shuffle / per-process sharding / checkpointable iterator as the pixel pipeline. The data
layer stays model-agnostic: the encoder comes in as a function.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Callable

import grain
import numpy as np
from tqdm import tqdm

from sora_jax.data import pipeline

log = logging.getLogger(__name__)
KEYS = ("latents", "tokens", "text_mask", "caption")


def cache_path(cache_dir: str, description: dict) -> str:
  """A file name that changes whenever anything that shaped the latents changes."""
  digest = hashlib.sha1(json.dumps(description, sort_keys=True).encode()).hexdigest()[:12]
  return os.path.join(cache_dir, f"latents_{digest}.npz")


TEXT_KEYS = ("text_len", "text")   # what shapes a cache's tokens, not its latents


def latent_key(description: dict) -> str:
  """The digest of what shaped the latents alone: caches that differ only in how captions are
  tokenized share it, so one can be derived from another without the VAE (`retokenize`)."""
  rest = {k: v for k, v in description.items() if k not in TEXT_KEYS}
  return hashlib.sha1(json.dumps(rest, sort_keys=True).encode()).hexdigest()[:12]


def find_same_latents(cache_dir: str, description: dict) -> str | None:
  """A cache in `cache_dir` holding the same latents as `description` describes, if any."""
  key = latent_key(description)
  if not os.path.isdir(cache_dir):
    return None
  for name in sorted(os.listdir(cache_dir)):
    if not (name.startswith("latents_") and name.endswith(".npz")):
      continue
    try:
      with np.load(os.path.join(cache_dir, name), allow_pickle=False) as f:
        if "latent_key" in f.files and str(f["latent_key"]) == key:
          return os.path.join(cache_dir, name)
    except (OSError, ValueError):   # a damaged cache is rebuilt, never trusted
      continue
  return None


def retokenize(src: str, path: str, tokenizer, text_len: int) -> str:
  """Writes `path`: the cache `src` with its stored captions tokenized again at `text_len`
  (seconds, where encoding the clips again through the VAE takes minutes)."""
  with np.load(src, allow_pickle=False) as f:
    arrays = {k: f[k] for k in f.files}
  for k in [k for k in arrays if k == "caption" or k.startswith("caption_")]:
    suffix = k[len("caption"):]
    ids, mask = tokenizer.encode([str(c) for c in arrays[k]], text_len)
    arrays["tokens" + suffix], arrays["text_mask" + suffix] = ids, mask
  save_npz(path, arrays)
  log.info("latent cache %s: captions of %s tokenized again at text_len=%d", path, src, text_len)
  return path


def params_digest(params) -> str:
  """Hash of a parameter tree's values: a VAE trained further in the same workdir (same path,
  same config) encodes differently, so its cache must not be reused."""
  import jax
  h = hashlib.sha1()
  for leaf in jax.tree.leaves(params):
    h.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
  return h.hexdigest()[:16]


def build(data_cfg, split: str, num_clips: int, encode_fn: Callable[[np.ndarray], np.ndarray],
          path: str, *, seed: int = 0, encode_batch: int = 8, tokenizer=None,
          key: str = "") -> str:
  """Encodes `num_clips` clips of `split` with `encode_fn` (video [B,T,H,W,3] -> latents)."""
  cfg = data_cfg.copy_and_resolve_references()
  with cfg.unlocked():
    cfg.batch_size = encode_batch
  it = pipeline.make_iterator(cfg, split, seed=seed, process_index=0, process_count=1,
                              num_epochs=1, tokenizer=tokenizer)
  parts: dict[str, list] = {k: [] for k in KEYS}
  done = 0
  with tqdm(total=num_clips, desc="caching latents") as bar:
    while done < num_clips:
      batch = next(it)
      n = min(len(batch["video"]), num_clips - done)
      parts["latents"].append(np.asarray(encode_fn(batch["video"]))[:n])
      for k in KEYS[1:]:
        parts[k].append(np.asarray(batch[k])[:n])
      done += n
      bar.update(n)
  arrays = {k: np.concatenate(v) for k, v in parts.items()}
  arrays["caption"] = arrays["caption"].astype(str)
  if key:
    arrays["latent_key"] = np.asarray(key)
  save_npz(path, arrays)
  log.info("cached %d latents %s at %s", num_clips, arrays["latents"].shape[1:], path)
  return path


def build_mixed(data_cfg, split: str, num_clips: int, encode_fn: Callable[[np.ndarray], np.ndarray],
                path: str, *, seed: int = 0, encode_batch: int = 8, tokenizer=None) -> str:
  """`build` for a mix of sizes (`data.sizes`, data/packing.py): clips are encoded in batches of
  one size each (one compiled encoder per size) and stored per size; `MixedLatentSource` reads
  them back in the stream's order."""
  from sora_jax.data import packing
  examples = packing.mixed_examples(data_cfg, split, seed=seed, tokenizer=tokenizer)
  groups: dict[tuple, dict[str, list]] = {}
  order, pending = [], {}
  with tqdm(total=num_clips, desc="caching latents (mixed sizes)") as bar:
    def flush(shape):
      videos = pending.pop(shape)
      lat = np.asarray(encode_fn(np.stack(videos)))
      groups.setdefault(shape, {"latents": []})["latents"].append(lat)
      bar.update(len(videos))
    for i in range(num_clips):
      ex = examples[i]
      shape = tuple(ex["video"].shape[:3])
      g = groups.setdefault(shape, {"latents": []})
      order.append((list(groups).index(shape), sum(len(b) for b in g["latents"])
                    + len(pending.get(shape, []))))
      pending.setdefault(shape, []).append(ex["video"])
      for k in KEYS[1:]:
        g.setdefault(k, []).append(np.asarray(ex[k]))
      if len(pending[shape]) == encode_batch:
        flush(shape)
    for shape in list(pending):
      flush(shape)
  arrays = {"group": np.asarray([o[0] for o in order], np.int32),
            "row": np.asarray([o[1] for o in order], np.int32)}
  for gi, g in enumerate(groups.values()):
    arrays[f"latents_{gi}"] = np.concatenate(g["latents"])
    for k in KEYS[1:]:
      arrays[f"{k}_{gi}"] = np.stack(g[k])
    arrays[f"caption_{gi}"] = arrays[f"caption_{gi}"].astype(str)
  save_npz(path, arrays)
  log.info("cached %d latents of %d sizes (%s) at %s", num_clips, len(groups),
           ", ".join(str(a.shape[1:4]) for k, a in arrays.items() if k.startswith("latents_")),
           path)
  return path


def save_npz(path: str, arrays: dict) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp.{os.getpid()}.npz"
  np.savez(tmp, **arrays)
  os.replace(tmp, path)  # atomic: a killed build never leaves a half cache behind


class MixedLatentSource:
  """Random access over a `build_mixed` cache: clip i in the order it was encoded."""

  def __init__(self, path: str):
    with np.load(path, allow_pickle=False) as f:
      self.arrays = {k: f[k] for k in f.files}
    self.group, self.row = self.arrays["group"], self.arrays["row"]

  def __len__(self) -> int:
    return len(self.group)

  def __getitem__(self, i: int) -> dict:
    g, r = int(self.group[i]), int(self.row[i])
    return {k: self.arrays[f"{k}_{g}"][r] for k in KEYS}

  def shapes(self) -> list[tuple[int, ...]]:
    """Latent shapes [T, H, W, C] of the cached sizes."""
    return [self.arrays[k].shape[1:] for k in sorted(self.arrays) if k.startswith("latents_")]


class LatentSource:
  """Random access over a cache file (grain RandomAccessDataSource protocol)."""

  def __init__(self, path: str):
    with np.load(path, allow_pickle=False) as f:
      self.arrays = {k: f[k] for k in KEYS}

  def __len__(self) -> int:
    return len(self.arrays["latents"])

  def __getitem__(self, i: int) -> dict:
    return {k: v[i] for k, v in self.arrays.items()}


def make_dataset(path: str, batch_size: int, *, seed: int, process_index: int | None = None,
                 process_count: int | None = None) -> grain.IterDataset:
  """Shuffled, repeated, per-process batches of cached latents (as in pipeline.make_dataset)."""
  return source_dataset(LatentSource(path), batch_size, seed=seed, process_index=process_index,
                        process_count=process_count)


def source_dataset(source, batch_size: int, *, seed: int, process_index: int | None = None,
                   process_count: int | None = None) -> grain.IterDataset:
  """Shuffled, repeated, per-process batches of any random-access source of cached arrays."""
  pi, pc = pipeline._process(process_index, process_count)  # noqa: SLF001 - one definition
  if batch_size % pc:
    raise ValueError(f"config.data.batch_size={batch_size} is not divisible by {pc} processes")
  ds = grain.MapDataset.source(source).shuffle(seed=seed).repeat(None)
  ds = ds.batch(batch_size // pc, drop_remainder=True)
  if pc > 1:
    ds = ds[pi::pc]
  return ds.to_iter_dataset()
