"""Latent cache: encodes exactly the pipeline's clips once; serves them shuffled, sharded and
restorably, like the pixel pipeline."""
import numpy as np
import pytest

from configs import vae as vae_config
from sora_jax.data import latent_cache, pipeline


def fake_encode(video):  # [B,T,H,W,3] -> a deterministic, content-dependent "latent"
  return video.reshape(video.shape[0], video.shape[1], 4, video.shape[2] // 4, 4,
                       video.shape[3] // 4, 3).mean(axis=(3, 5))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
  cfg = vae_config.get_config("runlocal,res=16,frames=5").data
  path = latent_cache.cache_path(str(tmp_path_factory.mktemp("c")), {"test": 1})
  latent_cache.build(cfg, "train", 10, fake_encode, path, seed=0, encode_batch=4)
  return cfg, path


def test_cache_holds_the_encoded_pipeline_clips(cache):
  cfg, path = cache
  src = latent_cache.LatentSource(path)
  assert len(src) == 10
  c = cfg.copy_and_resolve_references()
  with c.unlocked():
    c.batch_size = 4
  first = next(pipeline.make_iterator(c, "train", seed=0, process_index=0, process_count=1,
                                      num_epochs=1))
  np.testing.assert_allclose(src[0]["latents"], fake_encode(first["video"])[0], atol=1e-6)
  assert src[0]["caption"] == str(first["caption"][0])
  np.testing.assert_array_equal(src[3]["tokens"], first["tokens"][3])


def test_key_changes_with_the_description(tmp_path):
  assert latent_cache.cache_path("d", {"a": 1}) != latent_cache.cache_path("d", {"a": 2})


def test_params_digest_sees_any_weight_change():
  params = {"enc": {"kernel": np.ones((3, 4), np.float32)}, "dec": np.zeros(5, np.float32)}
  trained = {"enc": {"kernel": np.ones((3, 4), np.float32)}, "dec": np.zeros(5, np.float32)}
  assert latent_cache.params_digest(params) == latent_cache.params_digest(trained)
  trained["dec"][2] = 1e-6
  assert latent_cache.params_digest(params) != latent_cache.params_digest(trained)


def test_iterator_is_deterministic_restorable_and_sharded(cache):
  _, path = cache
  it = iter(latent_cache.make_dataset(path, 4, seed=3))
  a = [next(it)["latents"] for _ in range(2)]
  state = it.get_state()
  nxt = next(it)["latents"]
  it2 = iter(latent_cache.make_dataset(path, 4, seed=3))
  np.testing.assert_array_equal(next(it2)["latents"], a[0])
  it2.set_state(state)
  np.testing.assert_array_equal(next(it2)["latents"], nxt)
  shards = [next(iter(latent_cache.make_dataset(path, 4, seed=3, process_index=i,
                                                process_count=2)))["latents"] for i in (0, 1)]
  assert shards[0].shape[0] == 2 and not np.array_equal(shards[0], shards[1])


def test_a_new_text_length_reuses_the_latents(tmp_path):
  """Caches that differ only in how captions are tokenized share their latents: the second is
  derived from the first without encoding a clip, with its captions cut at the new length."""
  from sora_jax.data.tokenizer import ByteTokenizer
  cfg = vae_config.get_config("runlocal,res=16,frames=5").data
  short = {"clips": "x", "text_len": 8, "text": ["bundled", ""]}
  long = {**short, "text_len": 64}
  other = {**short, "clips": "y"}
  assert latent_cache.latent_key(short) == latent_cache.latent_key(long)
  assert latent_cache.latent_key(short) != latent_cache.latent_key(other)
  d = str(tmp_path)
  src = latent_cache.cache_path(d, short)
  with cfg.unlocked():
    cfg.text_len = 8
  latent_cache.build(cfg, "train", 4, fake_encode, src, encode_batch=4,
                     key=latent_cache.latent_key(short))
  assert latent_cache.find_same_latents(d, long) == src
  assert latent_cache.find_same_latents(d, other) is None
  dst = latent_cache.retokenize(src, latent_cache.cache_path(d, long), ByteTokenizer(), 64)
  a, b = latent_cache.LatentSource(src), latent_cache.LatentSource(dst)
  np.testing.assert_array_equal(a.arrays["latents"], b.arrays["latents"])
  assert a.arrays["tokens"].shape == (4, 8) and b.arrays["tokens"].shape == (4, 64)
  caption = str(b[0]["caption"])
  assert len(caption) > 6   # the short cache cut it; the new one holds it whole
  assert ByteTokenizer().decode(b[0]["tokens"])[0] == caption
  assert ByteTokenizer().decode(a[0]["tokens"])[0] == caption[:6]
