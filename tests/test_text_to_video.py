"""TextToVideo: deterministic for a seed, any size the VAE and patch allow, clear size errors."""
import jax
import numpy as np
import pytest

from configs import t2v as t2v_config
from sora_jax import config as config_lib
from sora_jax.pipeline import TextToVideo, _dummy_batch
from sora_jax.train.state import unbox
from sora_jax.train.t2v_task import T2VTask


@pytest.fixture(scope="module")
def t2v():
  config = t2v_config.get_config("runlocal,res=32,frames=9")
  task = T2VTask(config)
  params = unbox(jax.jit(task.init)(jax.random.key(0), _dummy_batch(task)))
  # Non-zero DiT output layers, so the prompt and the noise both reach the pixels.
  params = jax.tree.map(lambda p: p + 0.02 * np.random.default_rng(0).standard_normal(p.shape)
                        .astype(p.dtype), params)
  return TextToVideo(config, params, task)


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


@pytest.mark.parametrize("kw,key", [({"num_frames": 8}, "data.frames"),
                                    ({"height": 36}, "data.height"),
                                    ({"width": 40}, "model.patch")])
def test_impossible_sizes_name_the_argument(t2v, kw, key):
  with pytest.raises(config_lib.ConfigError, match=key.replace(".", r"\.")):
    t2v("a red circle", **kw)
