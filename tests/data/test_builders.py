"""TFDS builders: video_folder on real clips (with damaged files skipped and counted), and a tiny
shapes_world whose splits come from disjoint seeds and match the world renderer exactly."""
import json
import pathlib
import shutil

import ml_collections as mlc
import numpy as np
import pytest

from configs.common import data_config
from sora_jax.data import builders
from sora_jax.io import video as video_io


def _cfg(**kw):
  cfg = data_config(frames=9, height=32, width=48, batch_size=4)
  cfg.update(kw)
  return cfg


@pytest.fixture(scope="module")
def folder_builder(real_videos_dir, tmp_path_factory):
  root = tmp_path_factory.mktemp("videos")
  for p in real_videos_dir.glob("*"):
    shutil.copy(p, root / p.name)
  (root / "broken.mp4").write_bytes(np.random.RandomState(0).bytes(3000))
  (root / "broken.txt").write_text("never read")
  data = (real_videos_dir / "bikes.mp4").read_bytes()
  (root / "cut.mp4").write_bytes(data[: len(data) // 2])
  (root / "cut.txt").write_text("a truncated file")
  shutil.copy(real_videos_dir / "carphone_pristine.mp4", root / "uncaptioned.mp4")
  cfg = _cfg(name="video_folder", folder=str(root), data_dir=str(tmp_path_factory.mktemp("tfds")))
  return builders.prepare(cfg), root


def test_video_folder_clips_real_videos(folder_builder, real_videos_dir):
  builder, _ = folder_builder
  ds = builder.as_data_source(split="train")
  # bikes: 10 s at 8 fps = 80 frames -> 8 clips of 9; carphone: 4.004 s -> 33 frames -> 3 clips.
  files = sorted(ds[i]["file"].decode() for i in range(len(ds)))
  assert files.count("bikes.mp4") == 8 and files.count("carphone_pristine.mp4") == 3
  assert len(ds) == 11
  ex = next(ds[i] for i in range(len(ds)) if ds[i]["file"] == b"carphone_pristine.mp4")
  assert ex["video"].shape == (9, 32, 48, 3) and ex["video"].dtype == np.uint8
  assert ex["caption"].decode() == (real_videos_dir / "carphone_pristine.txt").read_text().strip()
  # The stored clip is the resampled, resized source (not noise or a constant).
  src, _ = video_io.read_video(real_videos_dir / "carphone_pristine.mp4", fps=8,
                               start=9 * int(ex["clip_index"]), max_frames=9)
  want = video_io.resize_center_crop(src, 32, 48).astype(np.float32)
  assert np.abs(ex["video"].astype(np.float32) - want).mean() < 1.0
  assert ex["video"].std() > 10


def test_video_folder_skips_and_records_damaged_files(folder_builder):
  builder, _ = folder_builder
  report = json.loads((pathlib.Path(builder.data_dir) / "skipped.json").read_text())
  reasons = {s["file"]: s["reason"] for s in report["skipped"]}
  assert report["num_skipped"] == 3 and set(reasons) == {"broken.mp4", "cut.mp4",
                                                        "uncaptioned.mp4"}
  assert reasons["broken.mp4"].startswith("unreadable") and reasons["cut.mp4"].startswith("unread")
  assert reasons["uncaptioned.mp4"].startswith("no caption")
  assert builder.info.metadata["num_skipped"] == 3


def test_video_folder_caption_tables_and_split_dirs(tmp_path):
  clip = np.random.RandomState(1).randint(0, 255, (12, 20, 30, 3), np.uint8)
  for split in ("train", "test"):
    (tmp_path / "v" / split).mkdir(parents=True)
    video_io.write_video(tmp_path / "v" / split / f"{split}_a.mp4", clip, fps=8)
    video_io.write_video(tmp_path / "v" / split / f"{split}_b.gif", clip[:5], fps=8)
  (tmp_path / "v" / "captions.jsonl").write_text(
      json.dumps({"file": "train/train_a.mp4", "caption": "from jsonl"}) + "\n")
  (tmp_path / "v" / "captions.csv").write_text(
      "file,caption\ntest/test_a.mp4,\"from csv, with comma\"\ntrain/train_b.gif,short gif\n")
  cfg = _cfg(name="video_folder", folder=str(tmp_path / "v"), frames=4, height=16, width=16,
             data_dir=str(tmp_path / "tfds"))
  builder = builders.prepare(cfg)
  train, test = (builder.as_data_source(split=s) for s in ("train", "test"))
  caps = sorted({train[i]["caption"].decode() for i in range(len(train))})
  assert caps == ["from jsonl", "short gif"] and len(train) == 3 + 1
  assert len(test) == 3 and test[0]["caption"].decode() == "from csv, with comma"
  assert builder.info.metadata["skipped"] == [
      {"file": "test/test_b.gif", "reason": builder.info.metadata["skipped"][0]["reason"]}]


def test_config_names_and_errors():
  c = builders.shapes_world_config("8x32x32-n8")
  assert (c.frames, c.height, c.width, c.num_train, c.num_test) == (8, 32, 32, 8, 2)
  assert builders.shapes_world_config("17x64x64").num_train == 2000
  with pytest.raises(ValueError, match="builder_config"):
    builders.shapes_world_config("64px")
  with pytest.raises(ValueError, match="config.data.folder"):
    builders.make_builder(mlc.ConfigDict(dict(_cfg(name="video_folder"))))
  # The builder config names the render size; the world comes from data.world unless named.
  named = lambda **kw: builders.make_builder(mlc.ConfigDict(dict(_cfg(**kw)))).builder_config
  assert named(builder_config="17x64x112", world="large").name == "17x64x112-large"
  assert named(builder_config="17x64x112-large", world="large").world == "large"
  assert named(world="simple").name == "9x32x48-simple"
  with pytest.raises(ValueError, match="renders the 'simple' world but config.data.world='large'"):
    named(builder_config="17x64x112-simple", world="large")
  seeds = {s: {builders.clip_seed(s, i) for i in (0, 1, 10**7)} for s in builders.SPLITS}
  assert sum(len(v) for v in seeds.values()) == len(set().union(*seeds.values()))


@pytest.fixture(scope="module")
def shapes_builder(tmp_path_factory):
  cfg = _cfg(builder_config="8x32x32-n8", data_dir=str(tmp_path_factory.mktemp("shapes")))
  return builders.prepare(cfg)


def test_shapes_world_splits_are_disjoint_and_match_the_world(shapes_builder):
  from sora_jax.data import world
  info = shapes_builder.info
  assert {s: info.splits[s].num_examples for s in builders.SPLITS} == {
      "train": 8, "validation": 2, "test": 2, "test_compositional": 2}
  seeds = {}
  for split in builders.SPLITS:
    ds = shapes_builder.as_data_source(split=split)
    seeds[split] = {int(ds[i]["seed"]) for i in range(len(ds))}
    assert seeds[split] == {builders.clip_seed(split, i) for i in range(len(ds))}
  assert len(set().union(*seeds.values())) == 14
  ds = shapes_builder.as_data_source(split="test_compositional")
  ex = ds[1]
  want = world.generate_clip(int(ex["seed"]), 8, 32, 32, fps=8.0, split="test_compositional")
  np.testing.assert_array_equal(ex["video"], want["video"])
  assert ex["video"].shape == (8, 32, 32, 3) and ex["positions"].shape == (8, 3, 2)
  assert ex["caption"].decode() == want["caption"]
  assert ex["caption_detailed"].decode() == want["caption_detailed"]
  np.testing.assert_array_equal(ex["boxes"], want["boxes"])
  np.testing.assert_array_equal(ex["shape_ids"], want["shape_ids"])


def _tiny_folder(root: pathlib.Path, names, frames: int = 8) -> pathlib.Path:
  root.mkdir(parents=True, exist_ok=True)
  for k, name in enumerate(names):
    clip = np.random.RandomState(k).randint(0, 255, (frames, 16, 16, 3), np.uint8)
    video_io.write_video(root / f"{name}.mp4", clip, fps=8)
    (root / f"{name}.txt").write_text(f"a clip called {name}")
  return root


def test_video_folder_skips_and_counts_non_utf8_caption(tmp_path, caplog):
  root = _tiny_folder(tmp_path / "v", ["good", "latin1"])
  (root / "latin1.txt").write_bytes("a caf\u00e9 clip".encode("latin-1"))   # 0xe9 at offset 5
  with pytest.raises(ValueError, match=r"latin1\.txt.*not valid UTF-8.*offset 5"):
    builders.read_captions(root)   # the library call names the file instead of a bare decode error
  cfg = _cfg(name="video_folder", folder=str(root), frames=4, height=16, width=16,
             data_dir=str(tmp_path / "tfds"))
  with caplog.at_level("WARNING", logger=builders.log.name):
    builder = builders.prepare(cfg)
  ds = builder.as_data_source(split="train")
  assert len(ds) == 2 and {ds[i]["file"] for i in range(2)} == {b"good.mp4"}   # the rest is kept
  md = builder.info.metadata
  assert (md["num_skipped"], md["num_skipped_captions"], md["num_skipped_videos"]) == (2, 1, 1)
  reasons = {s["file"]: s["reason"] for s in md["skipped"]}
  assert "not valid UTF-8: byte 0xe9 at byte offset 5" in reasons["latin1.txt"]
  assert reasons["latin1.mp4"].startswith("no usable caption") and "latin1.txt" in reasons[
      "latin1.mp4"]
  report = json.loads((pathlib.Path(builder.data_dir) / "skipped.json").read_text())
  assert report["num_skipped_captions"] == 1 and report["skipped"] == md["skipped"]
  lines = [r.getMessage() for r in caplog.records]
  assert any("skipping latin1.txt" in m and "UTF-8" in m for m in lines)
  assert any("skipped 2 file(s)" in m and "1 caption" in m for m in lines)


def test_video_folder_identity_follows_the_folder_contents(tmp_path, caplog):
  root = _tiny_folder(tmp_path / "v", ["a"])
  cfg = _cfg(name="video_folder", folder=str(root), frames=4, height=16, width=16,
             data_dir=str(tmp_path / "tfds"))
  first = builders.prepare(cfg)
  assert len(first.as_data_source(split="train")) == 2
  assert builders.make_builder(cfg).builder_config.name == first.builder_config.name  # unchanged
  assert builders.make_builder(cfg).is_prepared()
  _tiny_folder(root, ["b"], frames=12)   # a new video: the prepared dataset is now stale
  stale = builders.make_builder(cfg)
  assert stale.builder_config.name != first.builder_config.name and not stale.is_prepared()
  assert builders.older_versions(stale) == [pathlib.Path(first.data_dir).parent]
  with caplog.at_level("WARNING", logger=builders.log.name):
    second = builders.prepare(cfg)
  assert any("changed since it was prepared" in r.getMessage() for r in caplog.records)
  ds = second.as_data_source(split="train")
  assert sorted(ds[i]["file"].decode() for i in range(len(ds))) == ["a.mp4"] * 2 + ["b.mp4"] * 3
  assert second.info.metadata["num_videos"] == 2
  assert pathlib.Path(first.data_dir).is_dir()    # the old dataset is kept, not overwritten
  # A changed caption is a changed dataset too.
  (root / "a.txt").write_text("a different caption, longer")
  assert builders.make_builder(cfg).builder_config.name != second.builder_config.name
