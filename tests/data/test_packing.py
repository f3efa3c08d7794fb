"""NaViT packing: size mixes, the mixed latent cache, and packed rows that are deterministic,
restore exactly, and hold every clip whole with its own positions and caption."""
import numpy as np
import pytest

from configs import t2v as t2v_config
from sora_jax import config as config_lib
from sora_jax.data import latent_cache, packing
from sora_jax.models import patching

PATCH, L, C = (1, 2, 2), 6, 3
GRIDS = [(2, 4, 4), (1, 4, 8), (1, 2, 2), (3, 2, 4), (1, 8, 4)]   # 8, 8, 1, 6, 8 tokens


class FakeCache:
  """Clips of assorted latent grids whose values say which clip and which position they are."""

  def __init__(self, n=40):
    self.items = []
    for i in range(n):
      t, h, w = GRIDS[i % len(GRIDS)]
      lat = np.full((t, h, w, C), float(i), np.float32)
      lat[..., 1] = np.arange(t)[:, None, None]
      tokens = np.zeros(L, np.int32)
      tokens[:3] = [i + 1, 7, 9]
      self.items.append({"latents": lat, "tokens": tokens, "text_mask": np.arange(L) < 3})

  def __len__(self):
    return len(self.items)

  def __getitem__(self, i):
    return self.items[i]


def _dataset(seed=0, **kw):
  args = dict(patchify=lambda lat: patching.patchify_clip(lat, PATCH), token_budget=16, slots=4,
              text_len=L, rows_per_batch=2, seed=seed)
  return packing.make_packed_dataset(FakeCache(), **{**args, **kw})


def _take(it, n):
  return [next(it) for _ in range(n)]


def _equal(a, b):
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_parse_sizes_and_pick():
  sizes = packing.parse_sizes("17x64x64:2, 17x64x112,1x64x64")
  assert [s.shape for s in sizes] == [(17, 64, 64), (17, 64, 112), (1, 64, 64)]
  assert sizes[0].weight == 2.0 and str(sizes[1]) == "17x64x112"
  for bad in ("17x64", "17x64x64:0", ""):
    with pytest.raises(config_lib.ConfigError, match="config.data.sizes"):
      packing.parse_sizes(bad)
  picks = [packing.pick_size(sizes, s) for s in range(3000)]
  share = np.mean([p.shape == (17, 64, 64) for p in picks])
  assert 0.45 < share < 0.55                       # weight 2 of 4
  assert picks == [packing.pick_size(sizes, s) for s in range(3000)]   # fixed per seed
  # a native 16:9 clip always takes the widescreen entry; a portrait clip the nearest (square)
  assert {packing.pick_size(sizes, s, native_hw=(720, 1280)).shape for s in range(50)} == {
      (17, 64, 112)}
  assert {packing.pick_size(sizes, s, native_hw=(1280, 720)).shape[1:] for s in range(50)} == {
      (64, 64)}


def test_rows_hold_whole_clips_with_positions_and_captions():
  batches = _take(iter(_dataset()), 6)
  seen = []
  for b in batches:
    assert b["patches"].shape == (2, 16, 12) and b["positions"].shape == (2, 16, 3)
    assert b["tokens"].shape == (2, 4 * L) and b["text_segment_ids"].shape == (2, 4 * L)
    for r in range(2):
      seg, pt = b["segment_ids"][r], b["patches"][r]
      for s in range(1, seg.max() + 1):
        idx = np.flatnonzero(seg == s)
        assert np.all(np.diff(idx) == 1)                       # contiguous
        clip = int(pt[idx[0], 0])
        assert np.all(pt[idx, 0] == clip)                      # one clip per segment
        grid = GRIDS[clip % len(GRIDS)]
        np.testing.assert_array_equal(b["positions"][r, idx],
                                      patching.grid_positions_np(patching.token_grid(*grid,
                                                                                      PATCH)))
        np.testing.assert_array_equal(pt[idx, 1], b["positions"][r, idx, 0])   # frame index
        cap = b["tokens"][r][b["text_segment_ids"][r] == s]     # its own caption, whole
        assert cap.tolist() == [clip + 1, 7, 9, 0, 0, 0]
        seen.append(clip)
      assert np.all(pt[seg == 0] == 0)                          # padding is zeros
  assert len(seen) == len(set(seen)) >= 12                      # no clip twice in an epoch
  fill = np.mean([np.mean(b["segment_ids"] > 0) for b in batches])
  assert fill > 0.8, fill


def test_deterministic_and_restores_exactly():
  a, b = iter(_dataset(seed=3)), iter(_dataset(seed=3))
  _equal(_take(a, 3), _take(b, 3))
  state = a.get_state()
  want = _take(a, 3)
  c = iter(_dataset(seed=3))
  c.set_state(state)
  _equal(_take(c, 3), want)
  other = _take(iter(_dataset(seed=4)), 1)[0]
  assert not np.array_equal(other["patches"], _take(iter(_dataset(seed=3)), 1)[0]["patches"])


def test_processes_pack_disjoint_shards():
  clips = []
  for pi in range(2):
    for b in _take(iter(_dataset(process_index=pi, process_count=2)), 3):
      assert b["patches"].shape[0] == 1
      clips += [set(np.unique(b["patches"][0][b["segment_ids"][0] > 0, 0]).astype(int))]
  firsts = [c for c in clips[:3]], [c for c in clips[3:]]
  assert not set().union(*firsts[0]) & set().union(*firsts[1])


def test_clip_over_budget_names_the_key():
  with pytest.raises(ValueError, match="more than config.data.pack_tokens=4"):
    _take(iter(_dataset(token_budget=4)), 1)


def test_mixed_cache_keeps_each_clip_its_size(tmp_path):
  config = t2v_config.get_config("runlocal,res=32,frames=9")
  with config.unlocked():
    config.data.sizes = "9x32x32,9x32x64,1x32x32"
  path = str(tmp_path / "mixed.npz")
  # a stand-in encoder: 4x temporal (causal), 8x spatial mean pooling, 2 channels
  def encode(video):
    b, t, h, w, _ = video.shape
    lat = video.reshape(b, t, h // 8, 8, w // 8, 8, 3).mean((3, 5))[:, ::4, ..., :2]
    return lat
  latent_cache.build_mixed(config.data, "train", 10, encode, path, encode_batch=3)
  src = latent_cache.MixedLatentSource(path)
  assert len(src) == 10
  ex = packing.mixed_examples(config.data, "train", seed=0)
  for i in range(10):
    want = encode(ex[i]["video"][None])[0]
    np.testing.assert_allclose(src[i]["latents"], want, rtol=1e-6, atol=1e-6)
    assert src[i]["caption"] == ex[i]["caption"]
  assert {s[:3] for s in src.shapes()} <= {(3, 4, 4), (3, 4, 8), (1, 4, 4)}


def test_config_checks_the_mix():
  config = t2v_config.get_config("runlocal,res=32,frames=9")
  with config.unlocked():
    config.data.sizes, config.data.pack_tokens = "9x32x32,9x36x32", 64
    config.data.cache_dir = "/tmp/unused"
  with pytest.raises(config_lib.ConfigError, match="sizes entry 9x36x32: .*height=36"):
    config_lib.validate(config)
  with config.unlocked():
    config.data.pack_tokens = 0
  with pytest.raises(config_lib.ConfigError, match="needs config.data.pack_tokens > 0"):
    config_lib.validate(config)
