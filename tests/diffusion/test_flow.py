"""Rectified flow: shift formula, t sampling, the diffusers sigma grid, the loss target."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sora_jax.diffusion import flow


def test_time_shift_hand_values():
  assert flow.time_shift(0.5, 3.0) == pytest.approx(0.75)
  assert flow.time_shift(0.25, 3.0) == pytest.approx(0.75 / 1.5)
  np.testing.assert_allclose(flow.time_shift(np.array([0.0, 1.0]), 5.0), [0.0, 1.0])
  assert flow.time_shift(0.3, 1.0) == pytest.approx(0.3)


def test_resolution_shift_grows_with_tokens():
  assert flow.resolution_shift(256, base_tokens=256) == pytest.approx(1.0)
  assert flow.resolution_shift(1024, base_tokens=256) == pytest.approx(2.0)
  assert flow.resolution_shift(4096, base_tokens=256, max_shift=3.0) == pytest.approx(3.0)
  assert float(flow.resolution_shift(jnp.asarray(1024), base_tokens=256)) == pytest.approx(2.0)
  with pytest.raises(ValueError, match="num_tokens"):
    flow.resolution_shift(0)


def test_flow_timesteps_match_diffusers_grid():
  # diffusers FlowMatchEulerDiscreteScheduler(shift=1).set_timesteps(4).sigmas:
  # linspace(1, 0.001, 4) then 0.
  np.testing.assert_allclose(flow.flow_timesteps(4, 1.0),
                             [1.0, 0.667, 0.334, 0.001, 0.0], atol=1e-6)
  # shift=3: sigma_min = 3e-3/1.002, linspace(1, sigma_min, 4), shifted again, then 0.
  smin = 3 * 0.001 / (1 + 2 * 0.001)
  lin = np.linspace(1.0, smin, 4)
  want = np.append(3 * lin / (1 + 2 * lin), 0.0)
  np.testing.assert_allclose(flow.flow_timesteps(4, 3.0), want, rtol=1e-6)
  assert want[1] == pytest.approx(3 * (1 - (1 - smin) / 3) / (1 + 2 * (1 - (1 - smin) / 3)))
  # continuous grid
  np.testing.assert_allclose(flow.flow_timesteps(2, 3.0, None), [1.0, 0.75, 0.0], atol=1e-7)
  with pytest.raises(ValueError, match="sample.steps"):
    flow.flow_timesteps(0)


def test_sample_t_distributions():
  rng = jax.random.key(0)
  u = flow.sample_t(rng, 20000, sampling="uniform")
  assert float(u.min()) >= 0 and float(u.max()) < 1
  assert float(u.mean()) == pytest.approx(0.5, abs=0.01)
  ln = flow.sample_t(rng, 20000, sampling="logit_normal", mean=0.0, std=1.0)
  logit = np.log(np.asarray(ln) / (1 - np.asarray(ln)))
  assert logit.mean() == pytest.approx(0.0, abs=0.03)
  assert logit.std() == pytest.approx(1.0, abs=0.03)
  # the shift moves the median 0.5 to time_shift(0.5, 3) = 0.75
  sh = flow.sample_t(rng, 20000, sampling="logit_normal", shift=3.0)
  assert float(jnp.median(sh)) == pytest.approx(0.75, abs=0.01)
  with pytest.raises(ValueError, match="t_sampling"):
    flow.sample_t(rng, 2, sampling="beta")


def test_flow_loss_target_is_noise_minus_x0():
  x0 = jax.random.normal(jax.random.key(1), (2, 2, 3, 3, 4))
  noise = jax.random.normal(jax.random.key(2), x0.shape)
  t = jnp.array([0.25, 0.8])
  seen = {}

  def model(x, tt, cond):
    seen["x"], seen["t"] = x, tt
    return jnp.zeros_like(x) + cond

  loss, m = flow.flow_loss(model, x0, jax.random.key(3), 0.5, t=t, noise=noise)
  np.testing.assert_allclose(seen["x"][1], 0.2 * x0[1] + 0.8 * noise[1], atol=1e-6)
  want_per = np.mean((0.5 - (np.asarray(noise) - np.asarray(x0))) ** 2, axis=(1, 2, 3, 4))
  np.testing.assert_allclose(m["loss_per_example"], want_per, rtol=1e-5)
  assert float(loss) == pytest.approx(want_per.mean(), rel=1e-5)
  assert float(m["t_mean"]) == pytest.approx(0.525)


def test_flow_loss_zero_for_oracle_and_mask():
  x0 = jax.random.normal(jax.random.key(4), (3, 2, 2, 2, 2))

  def oracle(x, t, cond):   # knows x0, recovers noise from x_t and returns noise - x0
    tb = t[:, None, None, None, None]
    n = (x - (1 - tb) * x0) / tb
    return n - x0

  loss, m = flow.flow_loss(oracle, x0, jax.random.key(5), None, t_sampling="uniform")
  assert float(loss) < 1e-8
  # the mask keeps frame 0 only: error put in frame 1 does not count
  def wrong_frame1(x, t, cond):
    return oracle(x, t, cond).at[:, 1].add(1.0)
  mask = jnp.array([1.0, 0.0])[None, :, None, None, None]
  l_masked, _ = flow.flow_loss(wrong_frame1, x0, jax.random.key(5), None, loss_mask=mask)
  l_full, _ = flow.flow_loss(wrong_frame1, x0, jax.random.key(5), None)
  assert float(l_masked) < 1e-8
  assert float(l_full) == pytest.approx(0.5, rel=1e-4)


def test_object_weight_map_favours_what_stands_out_of_its_frame():
  x0 = jnp.full((2, 3, 4, 4, 2), 0.3).at[0, :, 1, 2].set(2.0)   # clip 0: one bright pixel a frame
  w = flow.object_weight_map(x0, 4.0)
  assert w.shape == (2, 3, 4, 4, 1)
  np.testing.assert_allclose(w[1], 1.0)                           # a uniform clip: plain mean
  np.testing.assert_allclose(flow.object_weight_map(x0, 0.0), 1.0)
  np.testing.assert_allclose(w[0, :, 1, 2, 0], 1.0 + 4.0 * 16, rtol=1e-4)   # s: mean 1 a clip
  np.testing.assert_allclose(w[0, :, 0, 0, 0], 1.0)
  # as the loss's weighted mask, an error on the object costs more than one on the backdrop
  def err_at(h, wi):   # at t = 1, x_t is the noise: x - x0 is the target, plus a unit error
    return lambda x, t, cond: x - x0[:1] + jnp.zeros_like(x).at[:, :, h, wi].add(1.0)
  on_obj, _ = flow.flow_loss(err_at(1, 2), x0[:1], jax.random.key(0), None, loss_mask=w[:1],
                             t=jnp.ones((1,)))
  on_bg, _ = flow.flow_loss(err_at(0, 0), x0[:1], jax.random.key(0), None, loss_mask=w[:1],
                            t=jnp.ones((1,)))
  assert float(on_obj) > 20 * float(on_bg) > 0


def test_packed_loss_is_the_mean_of_each_clip_alone():
  """A packed row of clips of 5, 2 and 3 tokens (+2 padding) and a row with one clip: the loss
  equals the mean of flow_loss on each clip alone, with its own t and noise; padding is free."""
  from sora_jax.diffusion import flow as F
  r = np.random.RandomState(0)
  lens = [(5, 2, 3), (7,)]
  n, p = 12, 4
  seg = np.zeros((2, n), np.int32)
  for b, ls in enumerate(lens):
    seg[b, :sum(ls)] = np.repeat(np.arange(1, len(ls) + 1), ls)
  x0 = jnp.asarray(r.randn(2, n, p), jnp.float32)
  noise = jnp.asarray(r.randn(2, n, p), jnp.float32)
  t = jnp.asarray([[0.2, 0.7, 0.5], [0.9, 0.0, 0.0]], jnp.float32)
  w = jnp.asarray(r.randn(p, p), jnp.float32)

  def model(x, tt, cond):   # per token, non-linear in x and its clip's t
    if tt.ndim == 2:         # packed: t per clip [B, S] -> per token
      tt = jnp.take_along_axis(tt, jnp.maximum(jnp.asarray(seg) - 1, 0), 1)
    return jnp.tanh(x @ w) * (1 + tt[..., None]) + cond

  loss, m = F.packed_flow_loss(model, x0, jnp.asarray(seg), jax.random.key(0), 0.1,
                               max_segments=3, shift_fn=lambda c: 1.0, t=t, noise=noise)
  alone = []
  for b, ls in enumerate(lens):
    start = 0
    for s, ln in enumerate(ls):
      sl = slice(start, start + ln)
      tok_model = lambda x, tt, cond: model(x[0], jnp.full(x.shape[1:2], tt[0]), cond)[None]  # noqa
      lo, _ = F.flow_loss(tok_model, x0[b:b + 1, sl], jax.random.key(1), 0.1, t=t[b:b + 1, s],
                          noise=noise[b:b + 1, sl])
      alone.append(float(lo))
      start += ln
  np.testing.assert_allclose(float(loss), np.mean(alone), rtol=1e-5)
  assert float(m["clips"]) == 4
  # padding tokens' values never matter
  x0_junk = x0.at[0, 10:].set(1e3)
  loss2, _ = F.packed_flow_loss(model, x0_junk, jnp.asarray(seg), jax.random.key(0), 0.1,
                                max_segments=3, shift_fn=lambda c: 1.0, t=t, noise=noise)
  np.testing.assert_allclose(float(loss2), float(loss), rtol=1e-6)
  # drawn t: each clip's own, shifted by its own token count
  _, m = F.packed_flow_loss(model, x0, jnp.asarray(seg), jax.random.key(0), 0.1, max_segments=3,
                            shift_fn=lambda c: F.resolution_shift(c, 4), noise=noise)
  assert np.isfinite(float(m["t_mean"]))


def test_packed_loss_per_frame_t_and_known_tokens():
  """Frame conditioning of packed clips: t per (clip, token frame), known tokens out of the loss;
  equals each clip alone with per-frame t and the same loss mask."""
  from sora_jax.diffusion import flow as F
  r = np.random.RandomState(3)
  # clip 1: 3 frames x 2 tokens, clip 2: 2 frames x 1 token, then 2 padding tokens
  seg = jnp.asarray([[1, 1, 1, 1, 1, 1, 2, 2, 0, 0]])
  frame = jnp.asarray([[0, 0, 1, 1, 2, 2, 0, 1, 0, 0]])
  positions = jnp.stack([frame, jnp.zeros_like(frame), jnp.zeros_like(frame)], -1)
  x0 = jnp.asarray(r.randn(1, 10, 3), jnp.float32)
  noise = jnp.asarray(r.randn(1, 10, 3), jnp.float32)
  t = jnp.asarray([[[0.0, 0.6, 0.6], [0.0, 0.3, 0.0]]], jnp.float32)    # first frames known
  known = jnp.asarray([[1, 1, 0, 0, 0, 0, 1, 0, 0, 0]], bool)

  def model(x, tt, cond):
    return jnp.tanh(x) * 0.5 + cond
  loss, m = F.packed_flow_loss(model, x0, seg, jax.random.key(0), 0.1, max_segments=2,
                               shift_fn=lambda c: 1.0, t=t, noise=noise, positions=positions,
                               loss_mask=~known)
  want = []
  for sl, tt in ((slice(2, 6), 0.6), (slice(7, 8), 0.3)):   # the unknown tokens of each clip
    xt = (1 - tt) * x0[0, sl] + tt * noise[0, sl]
    want.append(float(jnp.mean(jnp.square(model(xt, None, 0.1) - (noise[0, sl] - x0[0, sl])))))
  np.testing.assert_allclose(float(loss), np.mean(want), rtol=1e-5)
  assert float(m["clips"]) == 2
