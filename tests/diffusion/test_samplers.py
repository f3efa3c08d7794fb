"""Samplers: scan == python loop, CFG in one batched call, chunked == whole, toy-problem accuracy."""
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sora_jax.diffusion import flow, gaussian, samplers

SHAPE = (2, 2, 3, 3, 2)
MU, S = 0.7, 0.5   # toy data: x0 ~ N(MU, S^2) per element


def gauss_velocity(x, t, cond):
  """Exact rectified-flow velocity E[noise - x0 | x_t] for x0 ~ N(MU, S^2), noise ~ N(0, 1)."""
  tb = t.reshape((-1,) + (1,) * (x.ndim - 1))
  a = 1.0 - tb
  var = a**2 * S**2 + tb**2
  r = (x - a * MU) / var
  return tb * r - (MU + a * S**2 * r)


def toy_model(x, t, cond):
  """Depends on x, t and the conditioning, so CFG mixes differing outputs."""
  return gauss_velocity(x, t, None) + cond["w"][:, None, None, None, None] * 0.1 * x


@pytest.fixture(scope="module")
def noise():
  return jax.random.normal(jax.random.key(0), SHAPE)


def test_euler_converges_and_heun_beats_euler(noise):
  exact = MU + S * np.asarray(noise)   # the flow keeps each element's z-score
  cond = None
  err = {}
  for sampler, n in [("euler", 8), ("heun", 8), ("euler", 50), ("euler", 200)]:
    x = samplers.sample(gauss_velocity, noise, cond=cond, sampler=sampler, num_steps=n,
                        num_train_timesteps=None)
    err[sampler, n] = float(np.abs(np.asarray(x) - exact).max())
  assert err["euler", 200] < 1e-2
  assert err["euler", 200] < err["euler", 50] / 3   # first-order convergence: error ~ 1/steps
  assert err["heun", 8] < 0.25 * err["euler", 8]
  assert err["euler", 8] > 1e-3   # the toy problem is curved: Euler with few steps is not exact


def _loop_reference(model, noise, cond, objective, sampler, n, shift=1.0):
  """Independent Python-loop sampler written from the formulas."""
  x = np.asarray(noise, np.float64)
  b = x.shape[0]
  if objective == "flow":
    ts = flow.flow_timesteps(n, shift)
    for i in range(n):
      t0, t1 = float(ts[i]), float(ts[i + 1])
      d1 = np.asarray(model(jnp.asarray(x, jnp.float32), jnp.full((b,), t0), cond))
      if sampler == "heun" and i < n - 1:
        xe = x + (t1 - t0) * d1
        d2 = np.asarray(model(jnp.asarray(xe, jnp.float32), jnp.full((b,), t1), cond))
        x = x + (t1 - t0) * 0.5 * (d1 + d2)
      else:
        x = x + (t1 - t0) * d1
    return x
  ac = gaussian.alphas_cumprod()
  ks, prev = gaussian.ddim_timesteps(n, 1000, "trailing")
  for k, p in zip(ks, prev):
    out = np.asarray(model(jnp.asarray(x, jnp.float32), jnp.full((b,), (k + 1) / 1000), cond))
    a, ap = float(ac[k]), (float(ac[p]) if p >= 0 else 1.0)
    if objective == "eps":
      x0, e = (x - np.sqrt(1 - a) * out) / np.sqrt(a), out
    else:
      x0, e = np.sqrt(a) * x - np.sqrt(1 - a) * out, np.sqrt(a) * out + np.sqrt(1 - a) * x
    x = np.sqrt(ap) * x0 + np.sqrt(1 - ap) * e
  return x


@pytest.mark.parametrize("objective,sampler", [("flow", "euler"), ("flow", "heun"),
                                               ("eps", "ddim"), ("v", "ddim")])
def test_scan_equals_python_loop(noise, objective, sampler):
  cond = {"w": jnp.array([1.0, -2.0])}
  got = samplers.sample(toy_model, noise, cond=cond, objective=objective, sampler=sampler,
                        num_steps=5, shift=2.0 if objective == "flow" else 1.0)
  want = _loop_reference(toy_model, noise, cond, objective, sampler, 5,
                         shift=2.0 if objective == "flow" else 1.0)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_cfg_batched_single_call_and_combination(noise):
  cond, uncond = {"w": jnp.array([1.0, -2.0])}, {"w": jnp.array([0.0, 0.0])}
  seen_batches = []

  def counting(x, t, c):
    seen_batches.append(x.shape[0])
    return toy_model(x, t, c)

  # scale 1 -> the conditional pass only
  a = samplers.sample(counting, noise, cond=cond, uncond=uncond, guidance_scale=1.0, num_steps=4)
  b = samplers.sample(toy_model, noise, cond=cond, num_steps=4)
  np.testing.assert_allclose(a, b, rtol=1e-6)
  assert seen_batches == [2]
  # a traced scale of 1 takes the batched path and must still equal the conditional pass
  c = jax.jit(lambda s: samplers.sample(counting, noise, cond=cond, uncond=uncond,
                                        guidance_scale=s, num_steps=4))(1.0)
  np.testing.assert_allclose(c, b, rtol=1e-5, atol=1e-6)
  assert seen_batches[-1] == 4   # cond and uncond concatenated into one call
  # guided step == uncond + s (cond - uncond), one Euler step by hand
  s = 3.0
  g = samplers.sample(toy_model, noise, cond=cond, uncond=uncond, guidance_scale=s, num_steps=1,
                      num_train_timesteps=None)
  t = jnp.ones((2,))
  vc, vu = toy_model(noise, t, cond), toy_model(noise, t, uncond)
  np.testing.assert_allclose(g, noise - (vu + s * (vc - vu)), rtol=1e-5, atol=1e-6)
  assert not np.allclose(g, b, atol=1e-3)
  with pytest.raises(ValueError, match="uncond"):
    samplers.sample(toy_model, noise, cond=cond, uncond={"w": jnp.zeros(3)}, guidance_scale=2.0)


def test_guidance_interval_guides_only_inside(noise):
  cond, uncond = {"w": jnp.array([1.0, -2.0])}, {"w": jnp.array([0.0, 0.0])}
  kw = dict(cond=cond, uncond=uncond, num_steps=4, num_train_timesteps=None)   # t = 1, .75, .5, .25
  full = samplers.sample(toy_model, noise, guidance_scale=3.0, **kw)
  np.testing.assert_array_equal(
      samplers.sample(toy_model, noise, guidance_scale=3.0, guidance_interval=(0.0, 1.0), **kw),
      full)
  unguided = samplers.sample(toy_model, noise, guidance_scale=1.0, **kw)
  outside = samplers.sample(toy_model, noise, guidance_scale=3.0, guidance_interval=(0.9, 0.95),
                            **kw)
  np.testing.assert_allclose(outside, unguided, rtol=1e-5, atol=1e-6)
  # guided at t = 1 and 0.75, conditional at 0.5 and 0.25: the Euler loop by hand
  x = noise
  for t, scale in ((1.0, 3.0), (0.75, 3.0), (0.5, 1.0), (0.25, 1.0)):
    tb = jnp.full((2,), t)
    vc, vu = toy_model(x, tb, cond), toy_model(x, tb, uncond)
    x = x - 0.25 * (vu + scale * (vc - vu))
  upper = samplers.sample(toy_model, noise, guidance_scale=3.0, guidance_interval=(0.6, 1.0), **kw)
  np.testing.assert_allclose(upper, x, rtol=1e-5, atol=1e-5)
  assert not np.allclose(upper, full, atol=1e-3) and not np.allclose(upper, unguided, atol=1e-3)
  for bad in ((0.5, 0.2), (-0.1, 1.0), (0.0, 1.5), "0.3"):
    with pytest.raises(ValueError, match="guidance_interval"):
      samplers.sample(toy_model, noise, guidance_scale=3.0, guidance_interval=bad, **kw)


def test_jitted_sample_deterministic_one_trace():
  cond, uncond = {"w": jnp.array([1.0, -2.0])}, {"w": jnp.zeros(2)}

  @jax.jit
  @chex.assert_max_traces(n=1)
  def gen(rng, cond, uncond):
    noise = jax.random.normal(rng, SHAPE)
    return samplers.sample(toy_model, noise, cond=cond, uncond=uncond, sampler="heun",
                           num_steps=6, guidance_scale=4.0, shift=3.0)

  a = gen(jax.random.key(7), cond, uncond)
  b = gen(jax.random.key(7), cond, uncond)
  c = gen(jax.random.key(8), cond, uncond)
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)
  assert np.all(np.isfinite(a))


@pytest.mark.parametrize("objective,sampler", [("flow", "heun"), ("v", "ddim")])
def test_sample_in_chunks_equals_sample(noise, objective, sampler):
  cond, uncond = {"w": jnp.array([1.0, -2.0])}, {"w": jnp.zeros(2)}
  kw = dict(cond=cond, uncond=uncond, objective=objective, sampler=sampler, num_steps=7,
            guidance_scale=2.5)
  whole = samplers.sample(toy_model, noise, **kw)
  traces = []

  def counting(x, t, c):
    traces.append(1)
    return toy_model(x, t, c)

  chunked = samplers.sample_in_chunks(counting, noise, steps_per_chunk=3, progress=False, **kw)
  np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-6)
  # 3 chunks (3 + 3 + 1 padded), one compile: Heun's body traces the model twice, DDIM's once
  assert len(traces) == (2 if sampler == "heun" else 1)


@pytest.mark.parametrize("objective", ["eps", "v"])
def test_ddim_with_exact_prediction_recovers_x0(noise, objective):
  x0 = jnp.linspace(-1, 1, np.prod(SHAPE)).reshape(SHAPE)
  ac = jnp.asarray(gaussian.alphas_cumprod())

  def exact(x, t, cond):
    a = ac[gaussian.t_to_k(t, 1000)]
    ab = a.reshape((-1,) + (1,) * (x.ndim - 1))
    eps = (x - jnp.sqrt(ab) * x0) / jnp.sqrt(1 - ab)
    return eps if objective == "eps" else gaussian.v_target(x0, eps, a)

  out = samplers.sample(exact, noise, cond=None, objective=objective, sampler="ddim",
                        num_steps=10)
  np.testing.assert_allclose(out, x0, atol=2e-3)


def test_invalid_combinations():
  with pytest.raises(ValueError, match="sample.sampler"):
    samplers.make_schedule("eps", "heun")
  with pytest.raises(ValueError, match="diffusion.objective"):
    samplers.make_schedule("x0", "euler")


def test_objective_dispatcher(noise):
  import ml_collections
  from sora_jax.diffusion import objective
  d = ml_collections.ConfigDict(dict(objective="flow", t_sampling="uniform", logit_mean=0.0,
                                     logit_std=1.0, shift="auto", base_tokens=256,
                                     beta_schedule="linear", num_train_timesteps=1000))
  obj = objective.make_objective(d)
  assert obj.shift_for(1024) == pytest.approx(2.0)
  cond = {"w": jnp.array([1.0, -2.0])}
  loss, _ = obj.loss(toy_model, noise, jax.random.key(1), cond, num_tokens=1024)
  want, _ = flow.flow_loss(toy_model, noise, jax.random.key(1), cond, t_sampling="uniform",
                           shift=2.0)
  assert float(loss) == pytest.approx(float(want), rel=1e-6)
  sc = ml_collections.ConfigDict(dict(sampler="heun", steps=5, guidance_scale=1.0))
  np.testing.assert_allclose(
      obj.sample(toy_model, noise, cond, None, sc, num_tokens=1024),
      samplers.sample(toy_model, noise, cond=cond, sampler="heun", num_steps=5, shift=2.0),
      rtol=1e-6)
  # sample.shift moves only the sampling grid: 'train' keeps the training shift.
  assert obj.sample_kwargs(sc, num_tokens=1024)["shift"] == pytest.approx(2.0)
  sc3 = ml_collections.ConfigDict(dict(sampler="heun", steps=5, guidance_scale=1.0, shift="3"))
  assert obj.sample_kwargs(sc3, num_tokens=1024)["shift"] == 3.0
  v = objective.make_objective({"objective": "v", "shift": "3"})
  assert v.sample_kwargs(None)["sampler"] == "ddim" and v.shift == 3.0
  with pytest.raises(ValueError, match="diffusion.shift"):
    objective.make_objective({"shift": "big"})
  with pytest.raises(ValueError, match="diffusion.objective"):
    objective.make_objective({"objective": "x0"})
  with pytest.raises(ValueError, match="sample.sampler"):
    v.sample_kwargs({"sampler": "euler"})


@pytest.mark.parametrize("objective", ["eps", "v"])
def test_ddim_61_steps_runs(objective):
  """61 trailing steps once gave a 62-entry schedule (last k = -1) and the scan crashed."""
  sched = samplers.make_schedule(objective, "ddim", 61)
  assert all(v.shape == (61,) for v in sched.values())
  assert sched["t_cur"][0] == 1.0 and np.all(np.diff(sched["t_cur"]) < 0)
  assert sched["t_cur"][-1] > 0 and sched["ac_prev"][-1] == 1.0
  x0 = jnp.full((1, 1, 2, 2, 1), 0.5)
  noise = jax.random.normal(jax.random.key(0), x0.shape)
  ac = jnp.asarray(gaussian.alphas_cumprod())

  def exact(x, t, cond):
    a = ac[gaussian.t_to_k(t, 1000)].reshape((-1,) + (1,) * (x.ndim - 1))
    eps = (x - jnp.sqrt(a) * x0) / jnp.sqrt(1 - a)
    return eps if objective == "eps" else jnp.sqrt(a) * eps - jnp.sqrt(1 - a) * x0

  out = samplers.sample(exact, noise, cond=None, objective=objective, sampler="ddim",
                        num_steps=61)
  np.testing.assert_allclose(out, x0, atol=2e-3)
