"""One object per diffusion objective, so training and sampling code never branch on it.

  obj = make_objective(config.diffusion)
  loss, metrics = obj.loss(model_fn, x0, rng, cond, num_tokens)            # inside the train step
  loss, metrics = obj.packed_loss(model_fn, tokens, segment_ids, rng, cond, max_segments)
  x0 = obj.sample(model_fn, noise, cond, uncond, config.sample, num_tokens)  # jittable

Config keys read (defaults in brackets):
  diffusion.objective        'flow' | 'eps' | 'v'                               ['flow']
  diffusion.t_sampling       'logit_normal' | 'uniform' (flow only; DDPM draws k ~ U{0..N-1})
  diffusion.logit_mean / logit_std                                              [0.0 / 1.0]
  diffusion.shift            'auto' -> flow.resolution_shift(num_tokens), or a number (or its
                             string); flow only, used in training and sampling     [1.0]
  diffusion.base_tokens      tokens at which 'auto' gives base_shift             [256]
  diffusion.base_shift / max_shift  optional, for 'auto'                         [1.0 / None]
  diffusion.beta_schedule    'linear' | 'scaled_linear' | 'cosine' (eps / v)      ['linear']
  diffusion.num_train_timesteps                                                 [1000]
  sample.sampler             'euler' | 'heun' (flow), 'ddim' (eps / v)           [per objective]
  sample.steps, sample.guidance_scale                                            [30, 1.0]
  sample.timestep_spacing    'trailing' | 'leading' (DDIM)                       ['trailing']
`num_tokens` (latent tokens of one example, space x time) must be a Python int: the sampling
grid is built when tracing.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from sora_jax.diffusion import flow, gaussian, samplers

_DEFAULT_SAMPLER = {"flow": "euler", "eps": "ddim", "v": "ddim"}


def _get(cfg, key, default):
  if cfg is None:
    return default
  if hasattr(cfg, "get"):
    return cfg.get(key, default)
  return getattr(cfg, key, default)


def parse_shift(value, key: str = "diffusion.shift"):
  """'auto' stays 'auto'; numbers and numeric strings become floats; anything else is an error."""
  if isinstance(value, str):
    if value.strip().lower() == "auto":
      return "auto"
    try:
      value = float(value)
    except ValueError:
      raise ValueError(f"{key}={value!r} is neither 'auto' nor a number, e.g. {key}=3.0") from None
  value = float(value)
  if value <= 0:
    raise ValueError(f"{key}={value} must be > 0 (1.0 = no shift)")
  return value


@dataclasses.dataclass(frozen=True)
class Objective:
  """A configured diffusion objective (frozen: safe to close over in jitted functions)."""
  kind: str = "flow"
  t_sampling: str = "logit_normal"
  logit_mean: float = 0.0
  logit_std: float = 1.0
  shift: Any = 1.0
  base_tokens: int = 256
  base_shift: float = 1.0
  max_shift: float | None = None
  beta_schedule: str = "linear"
  num_train_timesteps: int = 1000

  def shift_for(self, num_tokens) -> float:
    """The flow timestep shift for a latent of `num_tokens` tokens."""
    if self.shift == "auto":
      if num_tokens is None:
        raise ValueError("diffusion.shift='auto' needs num_tokens (latent tokens per example)")
      return flow.resolution_shift(num_tokens, self.base_tokens, self.base_shift, self.max_shift)
    return self.shift

  def loss(self, model_fn, x0: jax.Array, rng: jax.Array, cond: Any, num_tokens=None,
           loss_mask: jax.Array | None = None, t: jax.Array | None = None
           ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """`t` [B] in (0, 1] fixes the noise levels (held-out evaluation on a grid of t); for DDPM
    it maps to the train timestep k = round(t * N) - 1."""
    if self.kind == "flow":
      return flow.flow_loss(model_fn, x0, rng, cond, t_sampling=self.t_sampling,
                            logit_mean=self.logit_mean, logit_std=self.logit_std,
                            shift=self.shift_for(num_tokens), loss_mask=loss_mask, t=t)
    k = None
    if t is not None:
      n = self.num_train_timesteps
      k = jnp.clip(jnp.round(t * n).astype(jnp.int32) - 1, 0, n - 1)
    return gaussian.gaussian_loss(model_fn, x0, rng, cond, prediction=self.kind,
                                  beta_schedule=self.beta_schedule,
                                  num_train_timesteps=self.num_train_timesteps,
                                  loss_mask=loss_mask, k=k)

  def sample_t(self, rng: jax.Array, n: int, num_tokens=None, shift=None) -> jax.Array:
    """n flow training timesteps, shifted for a latent of `num_tokens` tokens (or by `shift`)."""
    if self.kind != "flow":
      raise ValueError("per-frame timesteps (diffusion.frame_tasks) need diffusion.objective="
                       f"'flow'; got {self.kind!r}")
    return flow.sample_t(rng, n, sampling=self.t_sampling, mean=self.logit_mean,
                         std=self.logit_std,
                         shift=self.shift_for(num_tokens) if shift is None else shift)

  def packed_loss(self, model_fn, x0: jax.Array, segment_ids: jax.Array, rng: jax.Array,
                  cond: Any, max_segments: int, t: jax.Array | None = None,
                  positions: jax.Array | None = None, loss_mask: jax.Array | None = None
                  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The loss of packed rows (flow.packed_flow_loss): per-clip t, shift from each clip's own
    token count, mean over clips."""
    if self.kind != "flow":
      raise ValueError(f"packed training (data.pack_tokens > 0) needs diffusion.objective="
                       f"'flow'; got {self.kind!r}")
    return flow.packed_flow_loss(model_fn, x0, segment_ids, rng, cond, max_segments=max_segments,
                                 shift_fn=self.shift_for, t_sampling=self.t_sampling,
                                 logit_mean=self.logit_mean, logit_std=self.logit_std, t=t,
                                 positions=positions, loss_mask=loss_mask)

  def sample_shift(self, sample_cfg, num_tokens=None):
    """The sampling grid's shift: sample.shift ('train' = the training shift, or a number).

    A separate knob because where the grid spends its steps is a sampling choice (diffusers'
    schedulers take `shift` at inference too): the model was trained on every t either way."""
    value = _get(sample_cfg, "shift", "train")
    if value in (None, "", "train"):
      return self.shift_for(num_tokens)
    return parse_shift(value, "sample.shift")

  def sample_kwargs(self, sample_cfg=None, num_tokens=None) -> dict[str, Any]:
    """Keyword arguments for `samplers.sample` / `samplers.sample_in_chunks`."""
    sampler = _get(sample_cfg, "sampler", None) or _DEFAULT_SAMPLER[self.kind]
    samplers._check(self.kind, sampler)  # pylint: disable=protected-access
    return dict(objective=self.kind, sampler=sampler,
                num_steps=int(_get(sample_cfg, "steps", 30)),
                guidance_scale=_get(sample_cfg, "guidance_scale", 1.0),
                guidance_interval=_get(sample_cfg, "guidance_interval", (0.0, 1.0)),
                shift=self.sample_shift(sample_cfg, num_tokens) if self.kind == "flow" else 1.0,
                num_train_timesteps=self.num_train_timesteps,
                beta_schedule=self.beta_schedule,
                timestep_spacing=_get(sample_cfg, "timestep_spacing", "trailing"))

  def sample(self, model_fn, noise: jax.Array, cond: Any, uncond: Any = None, sample_cfg=None,
             num_tokens=None) -> jax.Array:
    """Noise -> x0 in one lax.scan (jittable); see `samplers.sample`."""
    return samplers.sample(model_fn, noise, cond=cond, uncond=uncond,
                           **self.sample_kwargs(sample_cfg, num_tokens))


def make_objective(diffusion_cfg=None) -> Objective:
  """Build the objective from `config.diffusion` (a ConfigDict, dict, or None for defaults)."""
  kind = _get(diffusion_cfg, "objective", "flow")
  if kind not in _DEFAULT_SAMPLER:
    raise ValueError(f"diffusion.objective={kind!r} is not one of 'flow', 'eps', 'v'")
  t_sampling = _get(diffusion_cfg, "t_sampling", "logit_normal")
  if t_sampling not in ("logit_normal", "uniform"):
    raise ValueError(f"diffusion.t_sampling={t_sampling!r} is not one of 'logit_normal', "
                     "'uniform'")
  beta_schedule = _get(diffusion_cfg, "beta_schedule", "linear")
  gaussian.make_betas(beta_schedule, 2)   # validates the name with the config key in the error
  max_shift = _get(diffusion_cfg, "max_shift", None)
  return Objective(
      kind=kind, t_sampling=t_sampling,
      logit_mean=float(_get(diffusion_cfg, "logit_mean", 0.0)),
      logit_std=float(_get(diffusion_cfg, "logit_std", 1.0)),
      shift=parse_shift(_get(diffusion_cfg, "shift", 1.0)),
      base_tokens=int(_get(diffusion_cfg, "base_tokens", 256)),
      base_shift=float(_get(diffusion_cfg, "base_shift", 1.0)),
      max_shift=None if max_shift is None else float(max_shift),
      beta_schedule=beta_schedule,
      num_train_timesteps=int(_get(diffusion_cfg, "num_train_timesteps", 1000)))
