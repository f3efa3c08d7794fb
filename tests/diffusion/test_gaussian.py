"""DDPM / DDIM pieces against hand-computed values (diffusers conventions)."""
import math
from fractions import Fraction

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


def _tie_positions(n, steps):
  """Indices i where n - i*n/steps is exactly a half-integer (float noise decides np.round)."""
  i = np.arange(steps)
  return (2 * n * (steps - i)) % (2 * steps) == steps


@pytest.mark.parametrize("n", [1000])
def test_ddim_timesteps_every_step_count(n):
  """For EVERY steps in 1..n: exactly `steps` entries, strictly decreasing, in [0, n-1], equal to
  diffusers' formulas. Regression: the float arange of 'trailing' gave steps+1 entries (last -1)
  for steps = 61, 103, 121, 122, ... and the DDIM scan crashed on the length mismatch."""
  bad = {}
  for steps in range(1, n + 1):
    # diffusers DDIMScheduler.set_timesteps, verbatim in plain numpy
    trailing_df = np.round(np.arange(n, 0, -n / steps)).astype(np.int64) - 1
    leading_df = (np.arange(0, steps) * (n // steps)).round()[::-1].astype(np.int64)
    for spacing, want in (("trailing", trailing_df), ("leading", leading_df)):
      ks, prev = g.ddim_timesteps(steps, n, spacing)
      errs = []
      if ks.shape != (steps,) or prev.shape != (steps,):
        errs.append(f"len {ks.shape[0]}/{prev.shape[0]}")
      if ks.size and not (ks.min() >= 0 and ks.max() <= n - 1):
        errs.append(f"range [{ks.min()}, {ks.max()}]")
      if not np.all(np.diff(ks) < 0):
        errs.append("not strictly decreasing")
      if ks.shape == (steps,):
        if not np.array_equal(prev, np.append(ks[1:], -1)):
          errs.append("prev != ks shifted")
        if spacing == "trailing":
          if ks[0] != n - 1:
            errs.append(f"starts at {ks[0]}")
          # diffusers' float formula, first `steps` entries (its extra trailing -1, when present,
          # is the bug), must match exactly except where n - i*n/steps is exactly a half-integer:
          # there float round-off, not the formula, decides which way np.round goes, so compare
          # with the exact rational value rounded half to even (Python's round on a Fraction).
          tie = _tie_positions(n, steps)
          if not np.array_equal(ks[~tie], want[:steps][~tie]):
            errs.append("!= diffusers trailing formula")
          exact = [round(Fraction(n * (steps - i), steps)) - 1 for i in np.flatnonzero(tie)]
          if not np.array_equal(ks[tie], np.array(exact, np.int64)):
            errs.append("!= exact round-half-even at half-integer ties")
        elif not np.array_equal(ks, want):
          errs.append("!= diffusers leading formula")
      if errs:
        bad.setdefault(spacing, []).append((steps, errs))
  assert not bad, "\n".join(f"{spacing} steps={steps}: {', '.join(errs)}"
                             for spacing, v in bad.items() for steps, errs in v)


def test_ddim_trailing_known_bad_counts():
  """The step counts that used to yield steps+1 entries, spelled out."""
  for steps in (61, 103, 121, 122, 201, 998):
    ks, prev = g.ddim_timesteps(steps, 1000, "trailing")
    assert ks.shape == prev.shape == (steps,)
    assert ks[0] == 999 and ks[-1] >= 0 and prev[-1] == -1
