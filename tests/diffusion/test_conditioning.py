"""Frame conditioning: training tasks draw the masks they name and the timesteps they imply.
(The sampling modes are tested through TextToVideo in tests/test_text_to_video.py, beside the
tiny model they share.)"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sora_jax import config as config_lib
from sora_jax.diffusion import conditioning as C
from sora_jax.diffusion import flow


def test_parse_tasks():
  assert C.parse_tasks("none:0.5, first:0.3,forcing") == (("none", 0.5), ("first", 0.3),
                                                          ("forcing", 1.0))
  assert C.parse_tasks("") == ()
  for bad in ("middle:1", "first:-1", "none:0"):
    with pytest.raises(config_lib.ConfigError, match="frame_tasks"):
      C.parse_tasks(bad)


@pytest.mark.parametrize("task", C.TASKS)
def test_each_task_draws_its_mask(task):
  mask, forcing = jax.jit(lambda k: C.frame_task_mask(k, 64, 6, ((task, 1.0),)))(
      jax.random.key(0))
  mask, forcing = np.asarray(mask), np.asarray(forcing)
  assert not mask.all(1).any()                         # always something left to learn
  assert forcing.all() == (task == "forcing") and forcing.any() == (task == "forcing")
  if task in ("none", "forcing"):
    assert not mask.any()
  if task == "first":
    assert mask[:, 0].all() and all(np.all(np.diff(r.astype(int)) <= 0) for r in mask)
  if task == "last":
    assert mask[:, -1].all() and all(np.all(np.diff(r.astype(int)) >= 0) for r in mask)
  if task == "first_last":
    assert mask[:, [0, -1]].all() and not mask[:, 1:-1].any()
  if task == "retake":   # one unknown span, the rest known
    assert all(np.count_nonzero(np.diff(np.r_[1, r.astype(int), 1])) == 2 for r in mask)
  if task == "keyframes":
    assert 0.1 < mask.mean() < 0.4
  # an image has no frames to condition on
  img, _ = C.frame_task_mask(jax.random.key(0), 4, 1, ((task, 1.0),))
  assert not np.asarray(img).any()


def test_frame_timesteps_clean_on_known_and_per_frame_for_forcing():
  mask = jnp.asarray([[True, False, False], [False, False, False]])
  forcing = jnp.asarray([False, True])
  t = np.asarray(C.frame_timesteps(jax.random.key(1), mask, forcing,
                                   lambda k, n: flow.sample_t(k, n)))
  assert t[0, 0] == 0 and t[0, 1] == t[0, 2] > 0
  assert len(set(t[1].tolist())) == 3
  t = np.asarray(C.frame_timesteps(jax.random.key(1), mask, forcing,
                                   lambda k, n: flow.sample_t(k, n), known_noise=0.1))
  assert 0 <= t[0, 0] < 0.1


@pytest.mark.parametrize("task", ["first", "last", "first_last", "keyframes", "retake"])
def test_packed_clips_of_their_own_lengths(task):
  """Packed clips of 1, 2, 3 and 6 frames in a 6-frame canvas: known frames stay inside each
  clip, an image gets none, and something is always left unknown."""
  lengths = jnp.tile(jnp.asarray([1, 2, 3, 6]), 16)
  mask, _ = C.frame_task_mask(jax.random.key(2), 64, 6, ((task, 1.0),), lengths=lengths)
  mask, lengths = np.asarray(mask), np.asarray(lengths)
  inside = np.arange(6)[None] < lengths[:, None]
  assert not (mask & ~inside).any()
  assert not mask[lengths == 1].any()
  assert ((~mask) & inside).any(1).all()
  assert mask[lengths >= 2].any()
