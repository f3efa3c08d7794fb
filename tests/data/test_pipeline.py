"""grain pipeline: determinism, exact resume (state and orbax), disjoint covering shards,
configurable size, caption modes, the tfds source, and global arrays on a mesh."""
import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from jax.sharding import PartitionSpec

from configs.common import data_config
from sora_jax.data import builders, pipeline, tokenizer, world


def _cfg(**kw):
  cfg = data_config(frames=4, height=16, width=24, batch_size=4, text_len=24)
  cfg.update(kw)
  return cfg


def _take(it, n):
  return [next(it) for _ in range(n)]


def _assert_same(a, b):
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.fixture(scope="module")
def tfds_cfg(tmp_path_factory):
  cfg = _cfg(source="tfds", builder_config="8x32x32-n8",
             data_dir=str(tmp_path_factory.mktemp("tfds")))
  builders.prepare(cfg)
  return cfg


def test_batch_layout_and_values():
  cfg = _cfg(caption="short")
  batch = next(pipeline.make_iterator(cfg, "train", seed=0))
  assert batch["video"].shape == (4, 4, 16, 24, 3) and batch["video"].dtype == np.float32
  assert -1.0 <= batch["video"].min() < batch["video"].max() <= 1.0
  assert batch["tokens"].shape == (4, 24) and batch["tokens"].dtype == np.int32
  assert batch["text_mask"].dtype == bool and batch["positions"].shape == (4, 4, 3, 2)
  seed = int(batch["seed"][0])
  clip = world.generate_clip(seed, 4, 16, 24, split="train")
  np.testing.assert_allclose(batch["video"][0], clip["video"] / 127.5 - 1.0, atol=1e-6)
  assert batch["caption"][0] == clip["caption"]
  assert tokenizer.ByteTokenizer().decode(batch["tokens"][:1])[0] == clip["caption"][:22]


def test_same_seed_same_batches_other_seed_differs():
  cfg = _cfg()
  a = _take(pipeline.make_iterator(cfg, "train", seed=3), 2)
  b = _take(pipeline.make_iterator(cfg, "train", seed=3), 2)
  for x, y in zip(a, b):
    _assert_same(x, y)
  c = next(pipeline.make_iterator(cfg, "train", seed=4))
  assert set(c["seed"]).isdisjoint(a[0]["seed"])


def test_restored_iterator_yields_the_same_next_batch(tmp_path):
  cfg = _cfg()
  it = pipeline.make_iterator(cfg, "train", seed=1)
  next(it)
  state = it.get_state()
  want = _take(it, 2)
  fresh = pipeline.make_iterator(cfg, "train", seed=1)
  fresh.set_state(state)
  for x, y in zip(_take(fresh, 2), want):
    _assert_same(x, y)
  # The same through orbax, as the trainer checkpoints it.
  it = pipeline.make_iterator(cfg, "train", seed=1)
  next(it)
  with ocp.CheckpointManager(tmp_path / "ckpt") as mngr:
    mngr.save(1, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
    mngr.wait_until_finished()
    fresh = pipeline.make_iterator(cfg, "train", seed=1)
    mngr.restore(1, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(fresh)))
  _assert_same(next(fresh), want[0])


def test_four_processes_get_disjoint_shards_covering_an_epoch(tfds_cfg):
  seen = []
  for pi in range(4):
    batches = list(pipeline.make_iterator(tfds_cfg, "train", seed=0, process_index=pi,
                                          process_count=4, num_epochs=1))
    assert len(batches) == 2 and batches[0]["video"].shape[0] == 1   # 4 // 4 per process
    seen.append({int(s) for b in batches for s in b["seed"]})
  assert sum(len(s) for s in seen) == 8
  assert set().union(*seen) == {builders.clip_seed("train", i) for i in range(8)}
  # A second epoch is reshuffled (the same way on every process), so it is covered again.
  epochs = [[int(b["seed"][0]) for b in pipeline.make_iterator(
      tfds_cfg, "train", seed=0, process_index=pi, process_count=4, num_epochs=2)]
      for pi in range(4)]
  assert all(len(e) == 4 for e in epochs)
  assert len({s for e in epochs for s in e[2:]}) == 8 and [e[:2] for e in epochs] != [
      e[2:] for e in epochs]
  # Procedural shards of the infinite stream are disjoint too.
  cfg = _cfg(batch_size=8)
  firsts = [pipeline.make_iterator(cfg, "train", seed=0, process_index=pi, process_count=4)
            for pi in range(4)]
  seeds = [set(next(it)["seed"]) for it in firsts]
  assert len(set().union(*seeds)) == 8


@pytest.mark.parametrize("frames,height,width", [(1, 32, 32), (9, 16, 40), (3, 40, 24)])
def test_resolution_aspect_and_duration_come_from_config(frames, height, width):
  cfg = _cfg(frames=frames, height=height, width=width, batch_size=2)
  batch = next(pipeline.make_iterator(cfg, "validation", seed=0))
  assert batch["video"].shape == (2, frames, height, width, 3)
  assert batch["visible"].shape == (2, frames, 3)
  assert {int(s) >> 28 for s in batch["seed"]} == {1}      # validation's seed range


def test_tfds_source_crops_resizes_and_keeps_ground_truth_only_when_valid(tfds_cfg):
  same_aspect = tfds_cfg.copy_and_resolve_references()
  same_aspect.update(frames=8, height=16, width=16)
  batch = next(pipeline.make_iterator(same_aspect, "test", seed=0, shuffle=False))
  ds = pipeline.make_source(same_aspect, "test")
  raw = ds[0]
  assert int(batch["seed"][0]) == int(raw["seed"])
  assert batch["video"].shape == (4, 8, 16, 16, 3)
  np.testing.assert_array_equal(batch["positions"][0], raw["positions"])
  np.testing.assert_allclose(batch["video"][0].mean(), raw["video"].mean() / 127.5 - 1, atol=0.02)
  wide = tfds_cfg.copy_and_resolve_references()
  wide.update(frames=4, height=16, width=24, batch_size=2)
  batch = next(pipeline.make_iterator(wide, "train", seed=0))
  assert batch["video"].shape == (2, 4, 16, 24, 3) and "positions" not in batch
  too_long = tfds_cfg.copy_and_resolve_references()
  too_long.frames = 9
  with pytest.raises(ValueError, match="data.frames=9"):
    next(pipeline.make_iterator(too_long, "train", seed=0))


def test_worker_processes_give_the_same_batches():
  cfg = _cfg(batch_size=2)
  want = _take(pipeline.make_iterator(cfg, "train", seed=5), 2)
  cfg.num_workers = 1
  it = pipeline.make_iterator(cfg, "train", seed=5)
  for x, y in zip(_take(it, 2), want):
    _assert_same(x, y)
  state = it.get_state()
  nxt = next(it)
  fresh = pipeline.make_iterator(cfg, "train", seed=5)
  fresh.set_state(state)
  _assert_same(next(fresh), nxt)


def test_caption_modes():
  short = next(pipeline.make_iterator(_cfg(caption="short", batch_size=8), "train", seed=0))
  detailed = next(pipeline.make_iterator(_cfg(caption="detailed", batch_size=8), "train", seed=0))
  mixed = next(pipeline.make_iterator(_cfg(caption="mixed", batch_size=8), "train", seed=0))
  np.testing.assert_array_equal(short["seed"], mixed["seed"])
  picks = [m == d for m, d in zip(mixed["caption"], detailed["caption"])]
  assert all(m in (s, d) for m, s, d in zip(mixed["caption"], short["caption"],
                                            detailed["caption"]))
  assert 0 < sum(picks) < 8
  assert picks == [pipeline._mixed_pick(int(s)) for s in mixed["seed"]]


def test_errors_name_the_config_key(tmp_path):
  with pytest.raises(FileNotFoundError, match="prepare"):
    pipeline.make_source(_cfg(source="tfds", data_dir=str(tmp_path)), "train")
  with pytest.raises(ValueError, match="config.data.source"):
    pipeline.make_source(_cfg(name="video_folder"), "train")
  with pytest.raises(ValueError, match="batch_size=4 is not divisible"):
    pipeline.make_dataset(_cfg(), "train", seed=0, process_index=0, process_count=3)


def test_to_global_shards_the_batch_and_drops_strings():
  mesh = jax.make_mesh((4, 2), ("data", "fsdp"),
                       axis_types=(jax.sharding.AxisType.Auto,) * 2)
  batch = next(pipeline.make_iterator(_cfg(batch_size=8), "train", seed=0))
  out = pipeline.to_global(batch, mesh)
  assert "caption" not in out and set(out) == set(batch) - {"caption"}
  assert out["video"].shape == (8, 4, 16, 24, 3)
  assert out["video"].sharding.spec == PartitionSpec(("data", "fsdp"))
  assert len(out["video"].addressable_shards) == 8
  np.testing.assert_array_equal(np.asarray(out["tokens"]), batch["tokens"])
  data_only = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  assert pipeline.to_global(batch, data_only)["seed"].sharding.spec == PartitionSpec(("data",))
