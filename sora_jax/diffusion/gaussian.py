"""Gaussian (DDPM) diffusion with eps- or v-prediction — the ablation against rectified flow.

Forward process (diffusers `DDPMScheduler.add_noise`), integer timestep k in {0, ..., N-1}:

  x_k = sqrt(ac[k]) * x0 + sqrt(1 - ac[k]) * eps,      ac = alphas_cumprod = cumprod(1 - betas)

The denoiser sees the same float time as under rectified flow (1 = noise, 0 = data):

  t = (k + 1) / N          (k = N-1 -> t = 1, k = 0 -> t = 1/N)

so one DiT and one sampler API serve every objective. `t_to_k` is the inverse.
Targets: eps-prediction -> eps; v-prediction (Salimans & Ho 2022) -> sqrt(ac) eps - sqrt(1-ac) x0.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from sora_jax.diffusion.flow import masked_mean_per_example

ModelFn = Callable[[jax.Array, jax.Array, Any], jax.Array]
PREDICTIONS = ("eps", "v")


def make_betas(schedule: str = "linear", num_train_timesteps: int = 1000,
               beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
  """Betas `[N]` float32, exactly as diffusers `DDPMScheduler` / `DDIMScheduler` build them.

  'linear': linspace(beta_start, beta_end, N) (Ho et al. 2020);
  'scaled_linear': linspace(sqrt(start), sqrt(end), N)**2 (latent diffusion);
  'cosine' (= diffusers 'squaredcos_cap_v2'): Nichol & Dhariwal 2021, alpha_bar(s) =
  cos((s + 0.008) / 1.008 * pi/2)^2, beta_i = min(1 - alpha_bar((i+1)/N) / alpha_bar(i/N), 0.999).
  """
  n = int(num_train_timesteps)
  if schedule == "linear":
    return np.linspace(beta_start, beta_end, n, dtype=np.float32)
  if schedule == "scaled_linear":
    return (np.linspace(beta_start**0.5, beta_end**0.5, n, dtype=np.float32) ** 2).astype(np.float32)
  if schedule in ("cosine", "squaredcos_cap_v2"):
    abar = lambda s: math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2
    return np.array([min(1 - abar((i + 1) / n) / abar(i / n), 0.999) for i in range(n)],
                    dtype=np.float32)
  raise ValueError(f"diffusion.beta_schedule={schedule!r} is not one of 'linear', "
                   "'scaled_linear', 'cosine'")


def alphas_cumprod(schedule: str = "linear", num_train_timesteps: int = 1000) -> np.ndarray:
  """cumprod(1 - betas), float32 `[N]` (diffusers computes it with torch.cumprod in float32)."""
  return np.cumprod(1.0 - make_betas(schedule, num_train_timesteps), dtype=np.float32)


def k_to_t(k, num_train_timesteps: int):
  """Integer timestep -> model time: t = (k + 1) / N."""
  return (jnp.asarray(k).astype(jnp.float32) + 1.0) / num_train_timesteps


def t_to_k(t, num_train_timesteps: int):
  """Model time -> integer timestep (inverse of `k_to_t`; any t in (0, 1] maps into [0, N-1])."""
  k = jnp.ceil(jnp.asarray(t, jnp.float32) * num_train_timesteps - 1e-4).astype(jnp.int32) - 1
  return jnp.clip(k, 0, num_train_timesteps - 1)


def _b(a: jax.Array, like: jax.Array) -> jax.Array:
  """Broadcast a per-example `[B]` coefficient over the remaining axes of `like`."""
  return a.reshape(a.shape + (1,) * (like.ndim - a.ndim))


def add_noise(x0, eps, ac):
  """x_k = sqrt(ac) x0 + sqrt(1 - ac) eps, ac `[B]`."""
  ac = _b(ac, x0)
  return jnp.sqrt(ac) * x0 + jnp.sqrt(1.0 - ac) * eps


def v_target(x0, eps, ac):
  """v = sqrt(ac) eps - sqrt(1 - ac) x0 (diffusers `get_velocity`)."""
  ac = _b(ac, x0)
  return jnp.sqrt(ac) * eps - jnp.sqrt(1.0 - ac) * x0


def x0_from_eps(x_t, eps, ac):
  ac = _b(ac, x_t)
  return (x_t - jnp.sqrt(1.0 - ac) * eps) / jnp.sqrt(ac)


def x0_from_v(x_t, v, ac):
  ac = _b(ac, x_t)
  return jnp.sqrt(ac) * x_t - jnp.sqrt(1.0 - ac) * v


def eps_from_v(x_t, v, ac):
  ac = _b(ac, x_t)
  return jnp.sqrt(1.0 - ac) * x_t + jnp.sqrt(ac) * v


def split_prediction(pred, x_t, ac, prediction: str):
  """Model output -> (x0_hat, eps_hat) for either parameterisation."""
  if prediction == "eps":
    return x0_from_eps(x_t, pred, ac), pred
  if prediction == "v":
    return x0_from_v(x_t, pred, ac), eps_from_v(x_t, pred, ac)
  raise ValueError(f"diffusion.objective={prediction!r} is not a Gaussian prediction "
                   f"type; use one of {PREDICTIONS}")


def gaussian_loss(model_fn: ModelFn, x0: jax.Array, rng: jax.Array, cond: Any, *,
                  prediction: str = "eps", beta_schedule: str = "linear",
                  num_train_timesteps: int = 1000, loss_mask: jax.Array | None = None,
                  k: jax.Array | None = None, noise: jax.Array | None = None
                  ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """DDPM training loss: k ~ U{0..N-1} (as diffusers' training scripts), per-example MSE.

  The model is called with t = (k+1)/N. `k` / `noise` override the random draws.
  Returns (loss, {'loss', 't_mean', 'loss_per_example'}).
  """
  if prediction not in PREDICTIONS:
    raise ValueError(f"diffusion.objective={prediction!r}: Gaussian objectives are {PREDICTIONS}")
  b = x0.shape[0]
  rng_k, rng_n = jax.random.split(rng)
  x0 = x0.astype(jnp.float32)
  if k is None:
    k = jax.random.randint(rng_k, (b,), 0, num_train_timesteps)
  if noise is None:
    noise = jax.random.normal(rng_n, x0.shape, jnp.float32)
  ac = jnp.asarray(alphas_cumprod(beta_schedule, num_train_timesteps))[k]
  x_t = add_noise(x0, noise, ac)
  t = k_to_t(k, num_train_timesteps)
  pred = model_fn(x_t, t, cond).astype(jnp.float32)
  target = noise if prediction == "eps" else v_target(x0, noise, ac)
  per_ex = masked_mean_per_example(jnp.square(pred - target), loss_mask)
  loss = jnp.mean(per_ex)
  return loss, {"loss": loss, "t_mean": jnp.mean(t), "loss_per_example": per_ex}


def ddim_timesteps(num_steps: int, num_train_timesteps: int = 1000,
                   spacing: str = "trailing") -> tuple[np.ndarray, np.ndarray]:
  """(ks, prev_ks) int arrays `[num_steps]`: current and next integer timestep per DDIM step.

  'trailing' (default; diffusers `timestep_spacing="trailing"`, Lin et al. 2024 Table 2):
  ks[i] = round(N - i*N/steps) - 1 for i < steps, so sampling starts at k = N-1 (t = 1), the
  timestep the model was trained on for pure noise. Computed in exact integer arithmetic
  (round half to even, as np.round): diffusers' float `np.arange(N, 0, -N/steps)` yields
  steps+1 entries, the last k = -1, for some step counts (61, 103, 121, ... at N = 1000), and at
  exact half-integers its float round-off, not the formula, picks the rounding direction.
  'leading' (diffusers' DDIM default, steps_offset=0):
  ks = arange(steps) * (N // steps) reversed, which starts at k = N - N//steps.
  prev_ks[i] = ks[i+1] and -1 after the last step, where ac_prev = 1 (diffusers
  `set_alpha_to_one=True`); for N divisible by steps this equals diffusers'
  `prev_timestep = k - N // steps`.
  """
  n = int(num_train_timesteps)
  if not 1 <= num_steps <= n:
    raise ValueError(f"sample.steps={num_steps} must be in [1, num_train_timesteps={n}]")
  i = np.arange(num_steps, dtype=np.int64)
  if spacing == "trailing":
    q, r = np.divmod(n * (num_steps - i), num_steps)   # N - i*N/steps = q + r/steps, exactly
    ks = q + ((2 * r > num_steps) | ((2 * r == num_steps) & (q % 2 == 1))) - 1
  elif spacing == "leading":
    ks = (i * (n // num_steps))[::-1]
  else:
    raise ValueError(f"timestep_spacing={spacing!r} is not one of 'trailing', 'leading'")
  prev = np.concatenate([ks[1:], [-1]]).astype(np.int64)
  return ks, prev


def ddim_step(pred, x_t, ac_t, ac_prev, prediction: str):
  """One deterministic DDIM step (eta = 0), DDIM eq. 12 as in diffusers `DDIMScheduler.step`:

    x_prev = sqrt(ac_prev) * x0_hat + sqrt(1 - ac_prev) * eps_hat
  ac_t, ac_prev: `[B]` (or scalars broadcast to `[B]`).
  """
  ac_t = jnp.broadcast_to(jnp.asarray(ac_t, jnp.float32), x_t.shape[:1])
  ac_prev = jnp.broadcast_to(jnp.asarray(ac_prev, jnp.float32), x_t.shape[:1])
  x0_hat, eps_hat = split_prediction(pred, x_t, ac_t, prediction)
  return add_noise(x0_hat, eps_hat, ac_prev)
