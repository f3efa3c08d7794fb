"""DDPM / DDIM pieces against hand-computed values (diffusers conventions)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sora_jax.diffusion import gaussian as g


def test_linear_schedule_alphas_cumprod():
  betas = g.make_betas("linear")
  assert betas.shape == (1000,) and betas.dtype == np.float32
  assert betas[0] == pytest.approx(1e-4) and betas[-1] == pytest.approx(0.02)
  ac = g.alphas_cumprod("linear")
  assert ac[0] == pytest.approx(1 - 1e-4, rel=1e-7)
  want_last = np.prod(1 - np.linspace(1e-4, 0.02, 1000, dtype=np.float64))
  assert ac[999] == pytest.approx(want_last, rel=1e-3)   # ~4.04e-5
  assert 4.0e-5 < ac[999] < 4.1e-5


def test_cosine_schedule():
  betas = g.make_betas("cosine", 1000)
  abar = lambda s: math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2
  assert betas[0] == pytest.approx(1 - abar(1 / 1000) / abar(0), rel=1e-5)
  assert betas[-1] == pytest.approx(0.999)   # capped
  with pytest.raises(ValueError, match="beta_schedule"):
    g.make_betas("sigmoid")


def test_time_mapping_roundtrip():
  k = jnp.arange(1000)
  t = g.k_to_t(k, 1000)
  assert float(t[0]) == pytest.approx(1e-3) and float(t[-1]) == pytest.approx(1.0)
  np.testing.assert_array_equal(g.t_to_k(t, 1000), k)


def test_targets_and_conversions():
  x0 = jax.random.normal(jax.random.key(0), (2, 3, 4))
  eps = jax.random.normal(jax.random.key(1), (2, 3, 4))
  ac = jnp.array([0.9, 0.2])
  x_t = g.add_noise(x0, eps, ac)
  np.testing.assert_allclose(x_t[1], math.sqrt(0.2) * x0[1] + math.sqrt(0.8) * eps[1], rtol=1e-6)
  v = g.v_target(x0, eps, ac)
  np.testing.assert_allclose(v[0], math.sqrt(0.9) * eps[0] - math.sqrt(0.1) * x0[0], rtol=1e-5)
  np.testing.assert_allclose(g.x0_from_eps(x_t, eps, ac), x0, atol=1e-5)
  np.testing.assert_allclose(g.x0_from_v(x_t, v, ac), x0, atol=1e-5)
  np.testing.assert_allclose(g.eps_from_v(x_t, v, ac), eps, atol=1e-5)


def test_ddim_timesteps_spacings():
  ks, prev = g.ddim_timesteps(4, 1000, "trailing")
  np.testing.assert_array_equal(ks, [999, 749, 499, 249])
  np.testing.assert_array_equal(prev, [749, 499, 249, -1])
  ks, prev = g.ddim_timesteps(4, 1000, "leading")
  np.testing.assert_array_equal(ks, [750, 500, 250, 0])
  np.testing.assert_array_equal(prev, [500, 250, 0, -1])
  with pytest.raises(ValueError, match="sample.steps"):
    g.ddim_timesteps(0)


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_one_ddim_step_by_hand(prediction):
  ac = g.alphas_cumprod("linear")
  a_t, a_p = float(ac[749]), float(ac[499])
  x = np.array([[0.3, -1.2]], np.float32)
  out = np.array([[0.5, 0.1]], np.float32)
  if prediction == "eps":
    x0 = (x - math.sqrt(1 - a_t) * out) / math.sqrt(a_t)
    e = out
  else:
    x0 = math.sqrt(a_t) * x - math.sqrt(1 - a_t) * out
    e = math.sqrt(a_t) * out + math.sqrt(1 - a_t) * x
  want = math.sqrt(a_p) * x0 + math.sqrt(1 - a_p) * e
  got = g.ddim_step(jnp.asarray(out), jnp.asarray(x), a_t, a_p, prediction)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  # last step (ac_prev = 1) returns x0_hat
  np.testing.assert_allclose(g.ddim_step(jnp.asarray(out), jnp.asarray(x), a_t, 1.0, prediction),
                             x0, rtol=1e-5)


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_gaussian_loss_targets(prediction):
  x0 = jax.random.normal(jax.random.key(2), (2, 1, 2, 2, 3))
  noise = jax.random.normal(jax.random.key(3), x0.shape)
  k = jnp.array([0, 999])
  ac = g.alphas_cumprod()[np.array([0, 999])]
  seen = {}

  def model(x, t, cond):
    seen["t"], seen["x"] = t, x
    return jnp.zeros_like(x)

  loss, m = g.gaussian_loss(model, x0, jax.random.key(4), None, prediction=prediction,
                            k=k, noise=noise)
  np.testing.assert_allclose(seen["t"], [1e-3, 1.0], rtol=1e-6)
  np.testing.assert_allclose(seen["x"], g.add_noise(x0, noise, jnp.asarray(ac)), rtol=1e-6)
  tgt = noise if prediction == "eps" else g.v_target(x0, noise, jnp.asarray(ac))
  want = np.mean(np.asarray(tgt) ** 2, axis=(1, 2, 3, 4))
  np.testing.assert_allclose(m["loss_per_example"], want, rtol=1e-5)
  assert float(loss) == pytest.approx(want.mean(), rel=1e-5)
  with pytest.raises(ValueError, match="diffusion.objective"):
    g.gaussian_loss(model, x0, jax.random.key(4), None, prediction="x0")
