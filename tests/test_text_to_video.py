"""TextToVideo: deterministic for a seed, any size the VAE and patch allow, clear size errors."""
import jax
import numpy as np
import pytest

from sora_jax import config as config_lib
from sora_jax import runs
from sora_jax.pipeline import TextToVideo
from sora_jax.systems.vae import VAESystem


@pytest.fixture(scope="module")
def t2v(t2v_tiny):
  return t2v_tiny


def test_same_seed_same_video_other_seed_other_video(t2v):
  a = t2v("a red circle bounces to the right", seed=1)
  b = t2v("a red circle bounces to the right", seed=1)
  c = t2v("a red circle bounces to the right", seed=2)
  assert a.shape == (9, 32, 32, 3) and a.dtype == np.uint8
  np.testing.assert_array_equal(a, b)
  assert np.abs(a.astype(int) - c.astype(int)).mean() > 0.5


def test_prompt_changes_the_video(t2v):
  a, b = t2v(["a red circle falls", "a blue star grows"], seed=0)
  assert np.abs(a.astype(int) - b.astype(int)).mean() > 0.1


def test_unseen_sizes_and_durations(t2v):
  # RoPE-3D positions extend to grids never trained on: longer and wider than training.
  v = t2v("a green square falls", num_frames=13, height=32, width=64, num_steps=2)
  assert v.shape == (13, 32, 64, 3)
  img = t2v("a green square", num_frames=1, num_steps=2)  # text-to-image: a 1-frame video
  assert img.shape == (1, 32, 32, 3)


@pytest.mark.parametrize("kw,key", [({"num_frames": 8}, "--frames=8"),
                                    ({"height": 36}, "--height=36"),
                                    ({"width": 40}, "model.patch")])
def test_impossible_sizes_name_the_argument(t2v, kw, key):
  with pytest.raises(config_lib.ConfigError, match=key.replace(".", r"\.")):
    t2v("a red circle", **kw)


def test_aspect_and_seconds_resolve_to_representable_sizes(t2v):
  """Height/width snap to multiples of VAE x patch (16 here), frames to 1 + 4k at the model's
  fps; the short side keeps the training short side when only an aspect is given."""
  assert t2v.config.data.fps == 8
  assert t2v.resolve_size(aspect="16:9") == (None, 32, 64)
  assert t2v.resolve_size(aspect="9:16") == (None, 64, 32)
  assert t2v.resolve_size(aspect="4:3", width=64) == (None, 48, 64)
  assert t2v.resolve_size(aspect="1:1", height=48) == (None, 48, 48)
  assert t2v.resolve_size(seconds=2)[0] == 17 and t2v.resolve_size(seconds=0.01)[0] == 1
  for kw, msg in [({"aspect": "16x9"}, "WIDTH:HEIGHT"), ({"seconds": -1}, "positive"),
                  ({"seconds": 1, "num_frames": 9}, "both given"),
                  ({"aspect": "1:1", "height": 32, "width": 32}, "one of them")]:
    with pytest.raises(config_lib.ConfigError, match=msg):
      t2v.resolve_size(**kw)
  with pytest.raises(config_lib.ConfigError, match="use --height=32 or 48"):
    t2v("a red circle", height=40)


def test_many_prompts_each_at_its_own_size(t2v):
  out = t2v.many(["a red circle falls", "a blue star grows", "a green square"],
                 [{"aspect": "16:9"}, {}, {"num_frames": 1}], num_steps=1)
  assert [v.shape for v in out] == [(9, 32, 64, 3), (9, 32, 32, 3), (1, 32, 32, 3)]
  np.testing.assert_array_equal(out[1], t2v("a blue star grows", num_steps=1))
  with pytest.raises(config_lib.ConfigError, match="one size per prompt"):
    t2v.many(["a", "b"], [{}])


def test_ddpm_run_samples_with_any_step_count(t2v):
  # 61 DDIM steps once gave 62 timesteps (the last -1) and crashed the scan.
  config = t2v.config.copy_and_resolve_references().unlock()
  config.diffusion.objective, config.sample.sampler = "eps", "ddim"
  eps = TextToVideo(runs.t2v_system(config, vae=(t2v.system.vae, t2v.system.vae_params)),
                    t2v.params, on_long="warn")
  v = eps("a red circle falls", num_frames=1, num_steps=61)
  assert v.shape == (1, 32, 32, 3) and v.std() > 0


def test_chunked_vae_decode_through_the_public_api(t2v):
  # vae.encode_chunk > 0: latents decode chunk by chunk (flat memory), equal to one pass.
  config = t2v.config.copy_and_resolve_references().unlock()
  config.vae.encode_chunk = 1
  chunked = TextToVideo(runs.t2v_system(config, vae=(VAESystem(config), t2v.system.vae_params)),
                        t2v.params, on_long="warn")
  assert chunked.system.vae.chunked and not t2v.system.vae.chunked
  a = t2v("a red circle falls", num_steps=2, seed=5)
  b = chunked("a red circle falls", num_steps=2, seed=5)
  assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
