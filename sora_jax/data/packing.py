"""NaViT packing: clips of any (frames, height, width) — single images as one-frame videos — laid
side by side in rows of a fixed token budget, so one compiled train step sees every size.

A data mix is `data.sizes`, e.g. "17x64x64:2,17x64x112,17x112x64,33x64x64,1x64x64" (frames x
height x width, optional weight): the procedural world renders each clip at a size drawn from its
seed by weight; a user's `video_folder` clip takes the entry nearest its native aspect ratio (ties
drawn by weight), so it is never squeezed into another shape. Clips are encoded once into the
latent cache (`latent_cache.build_mixed`), then

  source ─► shuffle ─► per-process shard ─► patchify (tokens, (t, h, w) positions) ─► best-fit
  packing into `data.pack_tokens` tokens and `pack_tokens`/… caption slots ─► batch of rows

Each row holds `patches` [N, P], `positions` [N, 3], `segment_ids` [N] (clips 1..S, 0 = padding)
and the clips' captions slot by slot: `tokens`, `text_mask`, `text_segment_ids` [S*L]. grain's
`BestFitPackIterDataset` does the packing: deterministic for a seed, and its iterator state
checkpoints and restores exactly like the rest of the pipeline. The data layer stays
model-agnostic: the patchify function comes in from the caller.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import grain
import numpy as np

from sora_jax.config import Size, parse_sizes  # noqa: F401  (re-exported)
from sora_jax.data import builders
from sora_jax.data import pipeline

ROW_KEYS = ("patches", "positions", "segment_ids", "tokens", "text_mask", "text_segment_ids")


def _unit(seed: int, salt: int) -> float:
  """A fixed number in [0, 1) per (clip seed, salt): order-independent draws."""
  z = (int(seed) * 0x9E3779B97F4A7C15 + salt * 0xD1B54A32D192ED03) & 0xFFFFFFFFFFFFFFFF
  z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
  z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
  return ((z ^ (z >> 31)) >> 11) / float(1 << 53)


def pick_size(sizes: tuple[Size, ...], seed: int, native_hw: tuple[int, int] | None = None) -> Size:
  """The mix entry of a clip: by weight from its seed, or — for a clip with a native frame size
  — among the entries nearest its aspect ratio (log scale), by weight."""
  pool = sizes
  if native_hw is not None:
    aspect = math.log(native_hw[1] / native_hw[0])
    dist = [abs(math.log(s.width / s.height) - aspect) for s in sizes]
    pool = tuple(s for s, d in zip(sizes, dist) if d <= min(dist) + 1e-9)
  u = _unit(seed, 1) * sum(s.weight for s in pool)
  for s in pool:
    u -= s.weight
    if u < 0:
      return s
  return pool[-1]


class MixedSizeSource:
  """A data config's source with each clip at its own mix size (`target_size` on the example).

  Procedural clips are rendered at that size directly (a wider frame shows more of the world);
  a prepared builder's clips keep their native aspect through `pick_size`.
  """

  def __init__(self, data_cfg, split: str, sizes: tuple[Size, ...]):
    self.sizes, self.split = sizes, split
    self.procedural = data_cfg.source == "procedural"
    if self.procedural:
      self.sources = {s.shape: pipeline.ProceduralSource(split, *s.shape, fps=data_cfg.fps,
                                                         world=data_cfg.world) for s in sizes}
      self.length = len(next(iter(self.sources.values())))
    else:
      self.base = pipeline.make_source(data_cfg, split)
      self.length = len(self.base)

  def __len__(self) -> int:
    return self.length

  def __getitem__(self, index: int) -> dict[str, Any]:
    if self.procedural:
      size = pick_size(self.sizes, builders.clip_seed(self.split, int(index)))
      ex = self.sources[size.shape][index]
    else:
      ex = dict(self.base[index])
      h0, w0 = np.asarray(ex["video"]).shape[1:3]
      size = pick_size(self.sizes, int(ex.get("seed", index)), native_hw=(h0, w0))
    ex["target_size"] = np.asarray(size.shape, np.int32)
    return ex


def mixed_examples(data_cfg, split: str, *, seed: int, tokenizer=None) -> grain.MapDataset:
  """Shuffled, preprocessed, unbatched examples of the mix (what the latent cache encodes)."""
  sizes = parse_sizes(data_cfg.sizes)
  ds = grain.MapDataset.source(MixedSizeSource(data_cfg, split, sizes)).shuffle(seed=seed)
  return ds.random_map(pipeline.Preprocess(data_cfg.frames, data_cfg.height, data_cfg.width,
                                           data_cfg.caption, data_cfg.text_len,
                                           tokenizer=tokenizer), seed=seed)


class ToTokens:
  """A cached clip {latents [T, H, W, C], tokens, text_mask} -> the packer's sequences."""

  def __init__(self, patchify: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
               token_budget: int):
    self.patchify, self.token_budget = patchify, int(token_budget)

  def __call__(self, ex: dict[str, Any]) -> dict[str, np.ndarray]:
    patches, positions = self.patchify(np.asarray(ex["latents"]))
    if len(patches) > self.token_budget:
      raise ValueError(f"a clip of latent shape {np.shape(ex['latents'])[:3]} has {len(patches)} "
                       f"tokens, more than config.data.pack_tokens={self.token_budget}; raise "
                       f"pack_tokens to at least {len(patches)} or drop that size from data.sizes")
    return {"patches": np.asarray(patches, np.float32),
            "positions": np.asarray(positions, np.int32),
            "tokens": np.asarray(ex["tokens"], np.int32),
            "text_mask": np.asarray(ex["text_mask"], bool)}


def _row(packed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  return {"patches": packed["patches"], "positions": packed["positions"],
          "segment_ids": packed["patches_segment_ids"].astype(np.int32),
          "tokens": packed["tokens"], "text_mask": packed["text_mask"],
          "text_segment_ids": packed["tokens_segment_ids"].astype(np.int32)}


def caption_slots(token_budget: int, min_tokens_per_clip: int) -> int:
  """Caption slots per row: as many clips as the smallest clip allows to share a row."""
  return max(1, int(token_budget) // max(1, int(min_tokens_per_clip)))


def pack(examples: grain.IterDataset, *, token_budget: int, slots: int, text_len: int,
         num_bins: int, seed: int) -> grain.IterDataset:
  """Best-fit packing of ToTokens' sequences into rows of `token_budget` tokens and `slots`
  caption slots of `text_len` tokens each."""
  caption = slots * int(text_len)
  packed = grain.experimental.BestFitPackIterDataset(
      examples, length_struct={"patches": int(token_budget), "positions": int(token_budget),
                               "tokens": caption, "text_mask": caption},
      num_packing_bins=int(num_bins), seed=seed, shuffle_bins=True)
  return packed.map(_row)


def make_packed_dataset(source, *, patchify: Callable, token_budget: int, slots: int,
                        text_len: int, rows_per_batch: int, seed: int,
                        process_index: int | None = None, process_count: int | None = None,
                        num_bins: int | None = None) -> grain.IterDataset:
  """Batches of `rows_per_batch` packed rows per process from a random-access `source` of cached
  clips. Process i packs its own shard (clips i, i + n, ... of the one shuffled stream): rows
  stay disjoint across processes and every process yields the same number of batches."""
  pi, pc = pipeline._process(process_index, process_count)  # noqa: SLF001 - one definition
  if rows_per_batch % pc:
    raise ValueError(f"config.data.batch_size={rows_per_batch} packed rows is not divisible by "
                     f"{pc} processes")
  local = rows_per_batch // pc
  ds = grain.MapDataset.source(source).shuffle(seed=seed).repeat(None)
  if pc > 1:
    ds = ds[pi::pc]
  ds = ds.map(ToTokens(patchify, token_budget)).to_iter_dataset()
  ds = pack(ds, token_budget=token_budget, slots=slots, text_len=text_len,
            num_bins=num_bins or 2 * local, seed=seed)
  return ds.batch(local, drop_remainder=True)
