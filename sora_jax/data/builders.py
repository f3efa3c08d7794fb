"""TFDS builders (array_record, no TensorFlow): `shapes_world` and `video_folder`.

`shapes_world` materialises the procedural world: example `i` of a split is the clip rendered from
`clip_seed(split, i)`, exactly what the pipeline's procedural source renders on the fly, so a
prepared dataset and the infinite stream agree on their first N clips. The splits take seeds from
disjoint ranges; `test_compositional` holds the attribute combinations the world keeps out of train.

`video_folder` turns a directory of the user's videos into fixed-length captioned clips.
Unreadable, truncated, uncaptioned or too-short videos, and caption files (or caption-table rows)
that are not UTF-8, are skipped: one log line names each, a summary line counts them, and the
dataset's metadata (`builder.info.metadata["skipped"]`, `num_skipped`, `num_skipped_videos`,
`num_skipped_captions`) and `skipped.json` beside the data record them. A video whose only caption
was unreadable is skipped too ("no usable caption: its caption x.txt is not valid UTF-8"). The
config name ends in a digest of the folder's contents (`folder_digest`: relative paths, sizes and
mtimes of the videos and caption files), so a changed folder is prepared anew, never read stale.

Builder config names are strings a data config can carry: "TxHxW" (e.g. "17x64x64"), optionally
"TxHxW-nN" for N train examples (eval splits get max(2, N // 10)) — tests prepare "8x32x32-n8".
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import logging
import os
import pathlib
import re
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from sora_jax.io import video as video_io

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test", "test_compositional")
# Seeds of split s are offset + i; 2**28 per split is far beyond any dataset or procedural length.
_SPLIT_OFFSET = {name: k << 28 for k, name in enumerate(SPLITS)}
MAX_OBJECTS = 3
VIDEO_EXTENSIONS = (".mp4", ".webm", ".mov", ".avi", ".mkv", ".gif")


def clip_seed(split: str, index: int) -> int:
  """The world seed of clip `index` of `split`; ranges of different splits never overlap."""
  if split not in _SPLIT_OFFSET:
    raise ValueError(f"unknown split {split!r}; shapes_world splits are {', '.join(SPLITS)}")
  if not 0 <= index < 1 << 28:
    raise ValueError(f"clip index {index} out of range [0, 2**28)")
  return _SPLIT_OFFSET[split] + int(index)


class _CodePathHere:
  """tfds locates a package builder's source through `importlib_resources` (not installed here,
  and not needed): point it at this file directly."""

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    return epath.Path(__file__)


# --------------------------------------------------------------------------- shapes_world


@dataclasses.dataclass
class ShapesWorldConfig(tfds.core.BuilderConfig):
  frames: int = 17
  height: int = 64
  width: int = 64
  fps: float = 8.0
  num_train: int = 2000
  num_validation: int = 200
  num_test: int = 200
  num_test_compositional: int = 200
  world: str = "full"

  def num_examples(self, split: str) -> int:
    return int(getattr(self, f"num_{split}"))


_NAME_RE = re.compile(r"^(\d+)x(\d+)x(\d+)(?:-n(\d+))?(?:-(simple|large|standard|full))?$")
_DEFAULT_COUNTS = {"17x32x32": 2000, "17x64x64": 2000, "33x128x128": 1000, "65x256x256": 200}


def shapes_world_config(name: str) -> ShapesWorldConfig:
  """"TxHxW[-nN][-WORLD]" -> a config (predefined sizes keep their example counts; WORLD is
  simple | large | standard | full, default full: see data/world/sampling.py)."""
  m = _NAME_RE.match(str(name))
  if not m:
    raise ValueError(f"shapes_world builder_config {name!r} is not 'TxHxW' or 'TxHxW-nN' "
                     f"(e.g. '17x64x64', '8x32x32-n8' or '17x64x64-simple'); predefined: {', '.join(_DEFAULT_COUNTS)}")
  t, h, w, n, world = m.groups()
  base = f"{t}x{h}x{w}"
  train = int(n) if n else _DEFAULT_COUNTS.get(base, 1000)
  evals = max(2, train // 10)
  return ShapesWorldConfig(name=name, description=f"{t} frames of {h}x{w}, {train} train clips",
                           frames=int(t), height=int(h), width=int(w), num_train=train,
                           num_validation=evals, num_test=evals, num_test_compositional=evals,
                           world=world or "full")


def _world():
  # Imported here so that video_folder users never need the world module's dependencies.
  from sora_jax.data import world  # pylint: disable=g-import-not-at-top
  return world


class ShapesWorld(_CodePathHere, tfds.core.GeneratorBasedBuilder):
  """Procedural shapes moving with simple physics, with captions and ground truth."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [shapes_world_config(n) for n in _DEFAULT_COUNTS]

  def __init__(self, *, config: str | tfds.core.BuilderConfig | None = None, **kwargs):
    if isinstance(config, str):
      config = shapes_world_config(config)
    kwargs.setdefault("file_format", "array_record")
    super().__init__(config=config, **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    c = self.builder_config
    t, k = c.frames, MAX_OBJECTS
    tensor = tfds.features.Tensor
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "video": tensor(shape=(t, c.height, c.width, 3), dtype=np.uint8,
                            encoding=tfds.features.Encoding.ZLIB),
            "caption": tfds.features.Text(),
            "caption_detailed": tfds.features.Text(),
            "scene_json": tfds.features.Text(),
            "seed": tensor(shape=(), dtype=np.int64),
            "positions": tensor(shape=(t, k, 2), dtype=np.float32),
            "boxes": tensor(shape=(t, k, 4), dtype=np.float32),
            "visible": tensor(shape=(t, k), dtype=np.bool_),
            "object_valid": tensor(shape=(k,), dtype=np.bool_),
            "color_ids": tensor(shape=(k,), dtype=np.int32),
            "shape_ids": tensor(shape=(k,), dtype=np.int32),
            "motion_ids": tensor(shape=(k,), dtype=np.int32),
        }),
        metadata=tfds.core.MetadataDict(fps=c.fps),
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generate_examples(split) for split in SPLITS
            if self.builder_config.num_examples(split) > 0}

  def _generate_examples(self, split: str):
    c = self.builder_config
    world = _world()
    for i in range(c.num_examples(split)):
      seed = clip_seed(split, i)
      clip = world.generate_clip(seed, c.frames, c.height, c.width, fps=c.fps, split=split,
                                 world=c.world)
      yield i, render_example(clip, seed)


_GT_DTYPES = {"positions": np.float32, "boxes": np.float32, "visible": np.bool_,
              "object_valid": np.bool_, "color_ids": np.int32, "shape_ids": np.int32,
              "motion_ids": np.int32}


def render_example(clip: dict[str, Any], seed: int) -> dict[str, Any]:
  """A world clip as a shapes_world example (same keys and dtypes as the features)."""
  ex = {"video": np.asarray(clip["video"], np.uint8), "caption": clip["caption"],
        "caption_detailed": clip["caption_detailed"], "scene_json": clip["scene_json"],
        "seed": np.int64(seed)}
  for key, dtype in _GT_DTYPES.items():
    ex[key] = np.asarray(clip[key], dtype)
  return ex


# --------------------------------------------------------------------------- video_folder

CAPTION_TABLES = ("captions.jsonl", "captions.csv")


@dataclasses.dataclass
class VideoFolderConfig(tfds.core.BuilderConfig):
  folder: str = ""
  frames: int = 17
  height: int = 64
  width: int = 64
  fps: float = 8.0
  content_digest: str = ""   # folder_digest() when the config was made
  num_videos: int = 0


def _identity_prefix(folder: str, frames: int, height: int, width: int, fps: float) -> str:
  digest = hashlib.sha1(folder.encode("utf-8", "surrogateescape")).hexdigest()[:8]
  fps_tag = f"{fps:g}".replace(".", "p")
  return f"{frames}x{height}x{width}-{fps_tag}fps-{digest}"


def video_folder_config(folder: str | os.PathLike, frames: int, height: int, width: int,
                        fps: float = 8.0) -> VideoFolderConfig:
  """The config name carries the shape, a hash of the folder's path (different folders never mix)
  and a digest of its contents (`folder_digest`): adding, removing or changing a video or a
  caption file gives a new name, so `prepare` builds a new dataset instead of reusing a stale one.
  """
  folder = str(pathlib.Path(folder).expanduser().resolve())
  content, num_videos = folder_digest(folder) if os.path.isdir(folder) else ("nofolder", 0)
  prefix = _identity_prefix(folder, frames, height, width, fps)
  return VideoFolderConfig(name=f"{prefix}-{content}",
                           description=f"clips of {folder} ({num_videos} videos)", folder=folder,
                           frames=frames, height=height, width=width, fps=fps,
                           content_digest=content, num_videos=num_videos)


def _video_files(folder: pathlib.Path) -> list[pathlib.Path]:
  return sorted(p for p in folder.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS
                and p.is_file())


def folder_digest(folder: str | os.PathLike) -> tuple[str, int]:
  """(12-hex digest, number of videos) of what `video_folder` reads from `folder`: the sorted
  relative paths, sizes and mtimes of its videos, their .txt sidecars and the caption tables."""
  folder = pathlib.Path(folder)
  videos = _video_files(folder)
  files = set(videos)
  files.update(p.with_suffix(".txt") for p in videos)
  files.update(folder / name for name in CAPTION_TABLES)
  h = hashlib.sha1()
  for path in sorted(files):
    try:
      st = path.stat()
    except OSError:
      continue
    h.update(os.fsencode(path.relative_to(folder)) + b"\0%d\0%d\n" % (st.st_size, st.st_mtime_ns))
  return h.hexdigest()[:12], len(videos)


def _shown(rel: str | os.PathLike) -> str:
  """A path as printable text: bytes that are not UTF-8 in a file name appear as \\xNN."""
  return os.fsencode(rel).decode("utf-8", "backslashreplace")


def _not_utf8(data: bytes, err: UnicodeDecodeError) -> str:
  bad = data[err.start:err.end]
  return (f"not valid UTF-8: byte 0x{bad[0]:02x} at byte offset {err.start} "
          f"(after {data[max(0, err.start - 20):err.start].decode('utf-8', 'replace')!r}); "
          "re-save it as UTF-8")


def _decode(data: bytes) -> str:
  """UTF-8 (a leading byte-order mark is dropped); raises UnicodeDecodeError."""
  return data.decode("utf-8-sig")


def _lone_surrogate(text: str) -> int:
  """Index of the first lone surrogate (an undecodable byte under surrogateescape), or -1."""
  for i, ch in enumerate(text):
    if "\ud800" <= ch <= "\udfff":
      return i
  return -1


def _read_captions(folder: pathlib.Path):
  """-> (captions, problems, unusable): captions keyed by relative path (or bare name from a
  table); problems: (caption file or row, reason) of unreadable captions; unusable: relative video
  path -> why its sidecar could not be used."""
  caps: dict[str, str] = {}
  problems: list[tuple[str, str]] = []
  unusable: dict[str, str] = {}
  jsonl, table = folder / "captions.jsonl", folder / "captions.csv"
  if jsonl.exists():
    for n, raw in enumerate(jsonl.read_bytes().split(b"\n"), 1):
      where = f"captions.jsonl:{n}"
      try:
        line = _decode(raw) if n == 1 else raw.decode("utf-8")
      except UnicodeDecodeError as e:
        problems.append((where, "caption row " + _not_utf8(raw, e)))
        continue
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError as e:
        problems.append((where, f"caption row is not JSON: {e}"))
        continue
      if not isinstance(row, dict) or "file" not in row or "caption" not in row:
        raise ValueError(f"{jsonl}:{n}: each line needs keys 'file' and 'caption'")
      text = str(row["caption"])
      if _lone_surrogate(text) >= 0:
        problems.append((where, "caption row holds a lone surrogate escape (\\udXXX): not text"))
        continue
      caps[str(row["file"])] = text.strip()
  if table.exists():
    # Decoded with surrogateescape so one bad row cannot hide the others; rows holding
    # undecodable bytes are reported and dropped.
    text = table.read_bytes().decode("utf-8-sig", "surrogateescape")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not {"file", "caption"} <= set(reader.fieldnames or ()):
      raise ValueError(f"{table}: needs columns 'file' and 'caption', has {reader.fieldnames}")
    for row in reader:
      cells = (row["file"] or "") + "\n" + (row["caption"] or "")
      i = _lone_surrogate(cells)
      if i >= 0:
        problems.append((f"captions.csv:{reader.line_num}",
                         f"caption row is not valid UTF-8: byte 0x{ord(cells[i]) - 0xDC00:02x} "
                         f"in row {reader.line_num - 1}; re-save captions.csv as UTF-8"))
        continue
      caps[row["file"]] = (row["caption"] or "").strip()
  for path in _video_files(folder):
    rel = str(path.relative_to(folder))
    side = path.with_suffix(".txt")
    if rel in caps or not side.exists():
      continue
    data = side.read_bytes()
    try:
      caps[rel] = _decode(data).strip()
    except UnicodeDecodeError as e:
      side_rel = _shown(side.relative_to(folder))
      problems.append((side_rel, "caption " + _not_utf8(data, e)))
      unusable[rel] = f"its caption {side_rel} is not valid UTF-8"
  return caps, problems, unusable


def read_captions(folder: pathlib.Path) -> dict[str, str]:
  """Captions keyed by path relative to `folder`: captions.jsonl / captions.csv, then sidecars.
  A caption file or row that is not UTF-8 raises a ValueError naming it (the builder skips it)."""
  folder = pathlib.Path(folder)
  caps, problems, _ = _read_captions(folder)
  if problems:
    where, reason = problems[0]
    raise ValueError(f"{folder / where}: {reason}")
  return caps


def clip_video(frames: np.ndarray, length: int) -> list[np.ndarray]:
  """Non-overlapping clips of exactly `length` frames; the tail shorter than that is dropped."""
  return [frames[s:s + length] for s in range(0, len(frames) - length + 1, length)]


class VideoFolder(_CodePathHere, tfds.core.GeneratorBasedBuilder):
  """A user's directory of captioned videos, cut into fixed-length clips."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}

  def __init__(self, *, config: VideoFolderConfig | None = None, folder: str = "",
               frames: int = 17, height: int = 64, width: int = 64, fps: float = 8.0, **kwargs):
    if config is None:
      if not folder:
        raise ValueError("video_folder needs a folder: set config.data.folder to your videos")
      config = video_folder_config(folder, frames, height, width, fps)
    kwargs.setdefault("file_format", "array_record")
    super().__init__(config=config, **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    c = self.builder_config
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "video": tfds.features.Tensor(shape=(c.frames, c.height, c.width, 3), dtype=np.uint8,
                                          encoding=tfds.features.Encoding.ZLIB),
            "caption": tfds.features.Text(),
            "caption_detailed": tfds.features.Text(),
            "file": tfds.features.Text(),
            "clip_index": tfds.features.Tensor(shape=(), dtype=np.int32),
            "seed": tfds.features.Tensor(shape=(), dtype=np.int64),
        }),
        metadata=tfds.core.MetadataDict(
            fps=c.fps, folder=c.folder, content_digest=c.content_digest,
            num_videos=c.num_videos, skipped=[], num_skipped=0, num_skipped_videos=0,
            num_skipped_captions=0),
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    folder = pathlib.Path(self.builder_config.folder)
    if not folder.is_dir():
      raise ValueError(f"config.data.folder={str(folder)!r} is not a directory of videos")
    self._skipped: list[dict[str, str]] = []
    self._skipped_captions = 0
    captions, problems, unusable = _read_captions(folder)
    for where, reason in problems:
      self._skip(where, reason, caption=True)
    # Sub-folders named like splits become splits; otherwise everything is "train".
    split_dirs = {s: folder / s for s in ("train", "validation", "test") if (folder / s).is_dir()}
    if not split_dirs:
      return {"train": self._generate_examples(folder, folder, captions, unusable)}
    return {s: self._generate_examples(folder, d, captions, unusable)
            for s, d in split_dirs.items()}

  def _skip(self, rel: str, reason: str, caption: bool = False) -> None:
    log.warning("video_folder: skipping %s: %s", rel, reason)
    self._skipped.append({"file": rel, "reason": reason})
    self._skipped_captions += int(caption)
    md = self.info.metadata
    md["skipped"] = list(self._skipped)
    md["num_skipped"] = len(self._skipped)
    md["num_skipped_captions"] = self._skipped_captions
    md["num_skipped_videos"] = len(self._skipped) - self._skipped_captions

  def _generate_examples(self, root: pathlib.Path, folder: pathlib.Path, captions: dict[str, str],
                         unusable: dict[str, str]):
    c = self.builder_config
    for path in _video_files(folder):
      rel = str(path.relative_to(root))
      shown = _shown(rel)
      caption = captions.get(rel) or captions.get(path.name)
      if not caption:
        self._skip(shown, f"no usable caption: {unusable[rel]}" if rel in unusable else
                   "no caption (add a .txt beside it or a captions.jsonl/csv row)")
        continue
      try:
        frames, _ = video_io.read_video(path, fps=c.fps, size=(c.height, c.width))
      except video_io.VideoReadError as e:
        self._skip(shown, f"unreadable: {e}")
        continue
      clips = clip_video(frames, c.frames)
      if not clips:
        self._skip(shown, f"too short: {len(frames)} frames at {c.fps:g} fps < {c.frames}")
        continue
      for k, clip in enumerate(clips):
        key = f"{shown}#{k}"
        yield key, {
            "video": clip,
            "caption": caption, "caption_detailed": caption, "file": shown,
            "clip_index": np.int32(k),
            "seed": np.int64(int(hashlib.sha1(key.encode()).hexdigest()[:15], 16)),
        }


def older_versions(builder: VideoFolder) -> list[pathlib.Path]:
  """Datasets prepared earlier from the same folder and clip shape whose contents have changed
  since (they are never deleted automatically; remove them to free space)."""
  c = builder.builder_config
  prefix = _identity_prefix(c.folder, c.frames, c.height, c.width, c.fps) + "-"
  root = pathlib.Path(builder.data_dir_root) / builder.name
  if not root.is_dir():
    return []
  return sorted(p for p in root.iterdir()
                if p.is_dir() and p.name.startswith(prefix) and p.name != c.name)


# --------------------------------------------------------------------------- helpers


def make_builder(data_cfg) -> tfds.core.DatasetBuilder:
  """The builder a data config names (not prepared)."""
  data_dir = data_cfg.data_dir or None
  if data_cfg.name == "shapes_world":
    name = data_cfg.builder_config or f"{data_cfg.frames}x{data_cfg.height}x{data_cfg.width}"
    named = _NAME_RE.match(name)
    world = named.group(5) if named else None
    # A builder config names the render size; the world comes from data.world unless the name
    # ends in one, which must then agree.
    if world is None and data_cfg.world != "full":
      name += f"-{data_cfg.world}"
    elif world is not None and world != data_cfg.world:
      raise ValueError(f"config.data.builder_config={name!r} renders the {world!r} world but "
                       f"config.data.world={data_cfg.world!r}; end the builder config with "
                       f"'-{data_cfg.world}' or drop its world suffix")
    return ShapesWorld(config=name, data_dir=data_dir)
  if data_cfg.name == "video_folder":
    return VideoFolder(folder=data_cfg.folder, frames=data_cfg.frames, height=data_cfg.height,
                       width=data_cfg.width, fps=data_cfg.fps, data_dir=data_dir)
  raise ValueError(f"config.data.name={data_cfg.name!r} is not shapes_world or video_folder")


def prepare(data_cfg) -> tfds.core.DatasetBuilder:
  """Runs download_and_prepare into `data_cfg.data_dir`; writes skipped.json for video_folder.

  video_folder: a dataset is reused only while the folder's contents are unchanged (the config
  name carries `folder_digest`); otherwise a new one is built beside the old, which is kept."""
  builder = make_builder(data_cfg)
  if isinstance(builder, VideoFolder) and not builder.is_prepared():
    for old in older_versions(builder):
      log.warning("video_folder: %s changed since it was prepared into %s; preparing %s "
                  "(the old copy is kept: delete it to free space)", builder.builder_config.folder,
                  old, builder.builder_config.name)
  builder.download_and_prepare(file_format="array_record")
  if isinstance(builder, VideoFolder):
    md = builder.info.metadata
    skipped = list(md.get("skipped", []))
    n_cap = int(md.get("num_skipped_captions", 0))
    report = {"num_skipped": len(skipped), "num_skipped_videos": len(skipped) - n_cap,
              "num_skipped_captions": n_cap, "content_digest": md.get("content_digest", ""),
              "skipped": skipped}
    (pathlib.Path(builder.data_dir) / "skipped.json").write_text(json.dumps(report, indent=2))
    if skipped:
      log.warning("video_folder: skipped %d file(s) (%d video(s), %d caption file(s)/row(s)); "
                  "see %s: %s", len(skipped), len(skipped) - n_cap, n_cap,
                  pathlib.Path(builder.data_dir) / "skipped.json",
                  ", ".join(s["file"] for s in skipped))
  return builder
