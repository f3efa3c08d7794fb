"""The grain input pipeline: source -> shuffle -> per-process shard -> preprocess -> batch.

Two sources, picked by `data.source`:
  procedural  renders clip `i` of a split on the fly from `builders.clip_seed(split, i)`; 10**7
              clips per split, nothing on disk, any (frames, height, width).
  tfds        reads a prepared builder (`builders.prepare`): shapes_world or video_folder.

Every example becomes `video` float32 `[T, H, W, 3]` in [-1, 1] at the configured size (temporal
crop, resize to cover, centre crop), `tokens` int32 `[L]` and `text_mask` bool `[L]` from the byte
tokenizer, `caption` (str), `seed` (int64) and the world's ground truth when the source has it.
Shuffling uses one seed on every process and process i keeps local batches i, i + n, i + 2n, ...
of the shuffled stream (n processes), so the shards are disjoint, together cover each epoch, and
global batch k is the same whatever n. Iterators checkpoint with
`get_state()/set_state()` or `grain.checkpoint.CheckpointSave/CheckpointRestore` under orbax.
"""
from __future__ import annotations

from typing import Any

import grain
import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from sora_jax.data import builders
from sora_jax.data import tokenizer as tokenizer_lib
from sora_jax.io import video as video_io

PROCEDURAL_LENGTH = 10**7
_TIME_KEYS = ("positions", "boxes", "visible")
_GT_KEYS = ("positions", "boxes", "visible", "object_valid", "color_ids", "shape_ids",
            "motion_ids")


class ProceduralSource:
  """grain RandomAccessDataSource: clip `i` of `split` rendered from its seed when asked for."""

  def __init__(self, split: str, frames: int, height: int, width: int, fps: float = 8.0,
               length: int = PROCEDURAL_LENGTH, world: str = "full"):
    builders.clip_seed(split, 0)      # validates the split name
    self.split, self.frames, self.height, self.width, self.fps = split, frames, height, width, fps
    self.length, self.world = int(length), world

  def __len__(self) -> int:
    return self.length

  def __getitem__(self, index: int) -> dict[str, Any]:
    from sora_jax.data import world  # pylint: disable=g-import-not-at-top
    seed = builders.clip_seed(self.split, int(index))
    clip = world.generate_clip(seed, self.frames, self.height, self.width, fps=self.fps,
                               split=self.split, world=self.world)
    return builders.render_example(clip, seed)

  def __repr__(self) -> str:
    return (f"ProceduralSource(split={self.split!r}, {self.frames}x{self.height}x{self.width}, "
            f"fps={self.fps:g}, length={self.length}, world={self.world!r})")


def make_source(data_cfg, split: str):
  """The random-access source `data.source` names, for one split."""
  if data_cfg.source == "procedural":
    if data_cfg.name != "shapes_world":
      raise ValueError(f"config.data.source='procedural' renders shapes_world only, but "
                       f"config.data.name={data_cfg.name!r}; set config.data.source='tfds'")
    return ProceduralSource(split, data_cfg.frames, data_cfg.height, data_cfg.width,
                            data_cfg.fps, world=data_cfg.world)
  if data_cfg.source != "tfds":
    raise ValueError(f"config.data.source={data_cfg.source!r} is not 'procedural' or 'tfds'")
  builder = builders.make_builder(data_cfg)
  if not builder.is_prepared():
    raise FileNotFoundError(
        f"{data_cfg.name} ({builder.builder_config.name}) is not prepared under "
        f"{builder.data_dir_root}; run `sora_jax.data.builders.prepare(config.data)` "
        f"(or `sora-jax data prepare`) first, or set config.data.source='procedural'")
  splits = list(builder.info.splits.keys())
  if split not in splits:
    raise ValueError(f"split {split!r} is not in {data_cfg.name} at {builder.data_dir}; it has "
                     f"{', '.join(splits)} (config.data.split / config.data.eval_split)")
  return builder.as_data_source(split=split)


def _mixed_pick(seed: int) -> bool:
  """A fixed fair coin per clip seed (splitmix64 finaliser), so 'mixed' never depends on order."""
  z = (int(seed) + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
  z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
  z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
  return bool((z ^ (z >> 31)) & 1)


def _text(value) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class Preprocess:
  """One raw example -> model-ready arrays (a grain random map: the rng picks temporal crops)."""

  def __init__(self, frames: int, height: int, width: int, caption: str, text_len: int,
               random_crop: bool = True, tokenizer=None):
    if caption not in ("short", "detailed", "mixed"):
      raise ValueError(f"config.data.caption={caption!r} is not short, detailed or mixed")
    self.frames, self.height, self.width = frames, height, width
    self.caption, self.text_len, self.random_crop = caption, text_len, random_crop
    # The text encoder's own tokenizer (T5: SentencePiece); the bundled encoder reads bytes.
    self.tokenizer = tokenizer or tokenizer_lib.get_tokenizer("byte")

  def __call__(self, ex: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    video = np.asarray(ex["video"])
    t0, h0, w0 = video.shape[:3]
    # A mixed-size source (data/packing.py) gives each clip its own size.
    frames, height, width = (int(v) for v in ex.get("target_size", (self.frames, self.height,
                                                                    self.width)))
    if t0 < frames:
      raise ValueError(f"config.data.frames={frames} but the source's clips have {t0} "
                       f"frames; prepare a builder_config with at least {frames} frames")
    start = int(rng.integers(0, t0 - frames + 1)) if self.random_crop else 0
    video = video_io.resize_center_crop(video[start:start + frames], height, width)
    seed = int(ex.get("seed", 0))
    short = _text(ex["caption"])
    detailed = _text(ex.get("caption_detailed", short))
    use_detailed = self.caption == "detailed" or (self.caption == "mixed" and _mixed_pick(seed))
    caption = detailed if use_detailed else short
    tokens, mask = self.tokenizer.encode(caption, self.text_len)
    out = {"video": video.astype(np.float32) * np.float32(1 / 127.5) - np.float32(1.0),
           "tokens": tokens[0], "text_mask": mask[0], "caption": caption,
           "seed": np.int64(seed)}
    # Ground truth is in normalised image coordinates, so it survives a resize but not a crop
    # that changes the aspect ratio: keep it only when the aspect is unchanged.
    if "positions" in ex and abs(h0 * width - w0 * height) <= max(h0, w0) // 64:
      for key in _GT_KEYS:
        value = np.asarray(ex[key])
        out[key] = value[start:start + frames] if key in _TIME_KEYS else value
    return out


def _process(process_index, process_count) -> tuple[int, int]:
  pi = jax.process_index() if process_index is None else int(process_index)
  pc = jax.process_count() if process_count is None else int(process_count)
  if not 0 <= pi < pc:
    raise ValueError(f"process_index {pi} not in [0, process_count={pc})")
  return pi, pc


def make_dataset(data_cfg, split: str, *, seed: int, process_index: int | None = None,
                 process_count: int | None = None, shuffle: bool = True,
                 num_epochs: int | None = None, drop_remainder: bool = True,
                 tokenizer=None) -> grain.IterDataset:
  """Per-process batches of `data.batch_size // process_count` examples.

  `tokenizer` turns captions into `tokens`/`text_mask` (default: the bundled byte tokenizer).

  `num_epochs=None` takes `data.num_epochs`; 0 repeats forever. `seed` drives the shuffle and
  the temporal crops; the same seed gives the same batches.
  """
  pi, pc = _process(process_index, process_count)
  if data_cfg.batch_size % pc:
    raise ValueError(f"config.data.batch_size={data_cfg.batch_size} is not divisible by "
                     f"process_count={pc}")
  local_batch = data_cfg.batch_size // pc
  if num_epochs is None:
    num_epochs = int(data_cfg.num_epochs)
  num_epochs = int(num_epochs) or None          # 0 = forever, as in the config
  ds = grain.MapDataset.source(make_source(data_cfg, split))
  if shuffle:
    ds = ds.shuffle(seed=seed)
  if num_epochs != 1:
    ds = ds.repeat(num_epochs)
  ds = ds.random_map(Preprocess(data_cfg.frames, data_cfg.height, data_cfg.width,
                                data_cfg.caption, data_cfg.text_len, random_crop=shuffle,
                                tokenizer=tokenizer),
                     seed=seed)
  # Shard whole local batches, round-robin: global batch k is the k-th run of `batch_size`
  # examples of the one shuffled stream, in order, whatever the process count — so N processes
  # train on exactly the batches (and crops) of one, and a checkpoint's position moves between
  # process counts. The map is lazy: a process only reads and decodes its own batches.
  ds = ds.batch(local_batch, drop_remainder=drop_remainder)
  if pc > 1:
    ds = ds[:len(ds) // pc * pc][pi::pc]   # equal counts: no process waits for a missing batch
  # Batches of big clips are hundreds of MB as float32: keep the read-ahead short.
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=2))
  if data_cfg.num_workers > 0:
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=int(data_cfg.num_workers)))
  return it


def make_iterator(data_cfg, split: str, *, seed: int, process_index: int | None = None,
                  process_count: int | None = None, shuffle: bool = True,
                  num_epochs: int | None = None, drop_remainder: bool = True,
                  tokenizer=None) -> grain.DatasetIterator:
  """`iter(make_dataset(...))`: checkpointable with get_state()/set_state()."""
  return iter(make_dataset(data_cfg, split, seed=seed, process_index=process_index,
                           process_count=process_count, shuffle=shuffle, num_epochs=num_epochs,
                           drop_remainder=drop_remainder, tokenizer=tokenizer))


def _is_numeric(x: np.ndarray) -> bool:
  return np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_


def to_global(batch: dict[str, Any], mesh: jax.sharding.Mesh,
              spec: PartitionSpec = PartitionSpec(("data", "fsdp"))) -> dict[str, jax.Array]:
  """Process-local numpy batch -> global jax.Arrays sharded over the batch axis.

  Strings (captions) are dropped. Mesh axes the spec names but the mesh lacks are ignored, so the
  default spec works on a ("data",)-only mesh too.
  """
  names = set(mesh.axis_names)

  def keep(entry):
    if entry is None:
      return None
    axes = tuple(a for a in ((entry,) if isinstance(entry, str) else entry) if a in names)
    return axes or None

  sharding = NamedSharding(mesh, PartitionSpec(*(keep(e) for e in spec)))
  out = {}
  for key, value in batch.items():
    value = np.asarray(value)
    if _is_numeric(value):
      out[key] = jax.make_array_from_process_local_data(sharding, value)
  return out

