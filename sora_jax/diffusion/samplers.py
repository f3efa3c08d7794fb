"""Samplers: Euler / Heun for rectified flow, DDIM (eta=0) for eps / v; classifier-free guidance.

The whole denoising loop is one `jax.lax.scan` over a precomputed per-step schedule, so
`jax.jit(lambda ...: sample(...))` compiles one program whatever the step count. With
guidance the conditional and unconditional branches share ONE model call: x, t and the
(cond, uncond) pytrees are concatenated along the batch axis and the output is split and
combined as `uncond + s * (cond - uncond)` (Ho & Salimans 2022).

Time convention everywhere: t = 1 noise, t = 0 data; see flow.py and gaussian.py.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from sora_jax.config import check_interval
from sora_jax.diffusion import conditioning, flow, gaussian

ModelFn = Callable[[jax.Array, jax.Array, Any], jax.Array]
SAMPLERS = {"flow": ("euler", "heun"), "eps": ("ddim",), "v": ("ddim",)}


def _check(objective: str, sampler: str) -> None:
  if objective not in SAMPLERS:
    raise ValueError(f"diffusion.objective={objective!r} is not one of {tuple(SAMPLERS)}")
  if sampler not in SAMPLERS[objective]:
    raise ValueError(f"sample.sampler={sampler!r} does not apply to diffusion.objective="
                     f"{objective!r}; use one of {SAMPLERS[objective]}")


def _uses_cfg(uncond, guidance_scale) -> bool:
  if uncond is None:
    return False
  # A traced scale cannot be compared at trace time: then always take the batched path.
  return not (isinstance(guidance_scale, (int, float, np.number)) and guidance_scale == 1.0)


def guided_model(model_fn: ModelFn, cond: Any, uncond: Any = None, guidance_scale=1.0,
                 guidance_interval=(0.0, 1.0)) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """(x, t) -> prediction, with CFG folded into a single batched model call when active.

  `guidance_interval` (lo, hi): guidance only where lo <= t <= hi, the conditional prediction
  elsewhere (Kynkaanniemi et al. 2024, "Applying guidance in a limited interval")."""
  lo, hi = check_interval(guidance_interval)
  if not _uses_cfg(uncond, guidance_scale):
    return lambda x, t: model_fn(x, t, cond)
  c_leaves, u_leaves = jax.tree.leaves(cond), jax.tree.leaves(uncond)
  if jax.tree.structure(cond) != jax.tree.structure(uncond) or any(
      c.shape != u.shape for c, u in zip(c_leaves, u_leaves)):
    raise ValueError("CFG needs `uncond` shaped like `cond` (same pytree, same batch); got "
                     f"{jax.tree.map(jnp.shape, cond)} vs {jax.tree.map(jnp.shape, uncond)}")
  both = jax.tree.map(lambda c, u: jnp.concatenate([c, u], axis=0), cond, uncond)

  def fn(x, t):
    b = x.shape[0]
    out = model_fn(jnp.concatenate([x, x], 0), jnp.concatenate([t, t], 0), both)
    out_c, out_u = out[:b].astype(jnp.float32), out[b:].astype(jnp.float32)
    scale = guidance_scale
    if (lo, hi) != (0.0, 1.0):
      inside = (t >= lo - 1e-6) & (t <= hi + 1e-6)
      scale = jnp.where(inside, guidance_scale, 1.0).reshape((b,) + (1,) * (out_c.ndim - 1))
    return out_u + scale * (out_c - out_u)

  return fn


def make_schedule(objective: str = "flow", sampler: str = "euler", num_steps: int = 30,
                  shift=1.0, num_train_timesteps: int = 1000, beta_schedule: str = "linear",
                  timestep_spacing: str = "trailing") -> dict[str, np.ndarray]:
  """Per-step scan inputs (numpy, `[num_steps]` each).

  flow: t_cur, t_next from `flow.flow_timesteps`; ddim: the model time t_cur = (k+1)/N and
  the cumulative alphas ac_cur, ac_prev. `is_last` marks the final step (Heun's Euler step).
  """
  _check(objective, sampler)
  if objective == "flow":
    ts = flow.flow_timesteps(num_steps, shift, num_train_timesteps)
    t_cur, t_next = ts[:-1], ts[1:]
    ac_cur = ac_prev = np.zeros(num_steps, np.float32)
  else:
    ac = gaussian.alphas_cumprod(beta_schedule, num_train_timesteps)
    ks, prev = gaussian.ddim_timesteps(num_steps, num_train_timesteps, timestep_spacing)
    t_cur = ((ks + 1) / num_train_timesteps).astype(np.float32)
    t_next = np.maximum((prev + 1) / num_train_timesteps, 0.0).astype(np.float32)
    ac_cur = ac[ks]
    ac_prev = np.where(prev >= 0, ac[np.maximum(prev, 0)], 1.0).astype(np.float32)
  is_last = np.arange(num_steps) == num_steps - 1
  return {"t_cur": t_cur.astype(np.float32), "t_next": t_next.astype(np.float32),
          "ac_cur": ac_cur.astype(np.float32), "ac_prev": ac_prev.astype(np.float32),
          "is_last": is_last, "active": np.ones(num_steps, bool)}


def make_step(fn: Callable[[jax.Array, jax.Array], jax.Array], objective: str, sampler: str):
  """The scan body: (x float32, per-step schedule entries) -> next x. Inactive steps are no-ops."""
  _check(objective, sampler)

  def pred(x, t):
    return fn(x, jnp.full((x.shape[0],), t, jnp.float32)).astype(jnp.float32)

  def euler(x, s):
    return x + (s["t_next"] - s["t_cur"]) * pred(x, s["t_cur"])

  def heun(x, s):
    dt = s["t_next"] - s["t_cur"]
    d1 = pred(x, s["t_cur"])
    x_e = x + dt * d1

    def correct(_):
      return x + dt * 0.5 * (d1 + pred(x_e, s["t_next"]))

    # Karras et al. 2022 (Alg. 1): the step into t = 0 stays Euler.
    return jax.lax.cond(s["is_last"], lambda _: x_e, correct, None)

  def ddim(x, s):
    b = x.shape[0]
    return gaussian.ddim_step(pred(x, s["t_cur"]), x, jnp.full((b,), s["ac_cur"]),
                              jnp.full((b,), s["ac_prev"]), objective)

  update = {"euler": euler, "heun": heun, "ddim": ddim}[sampler]

  def step(x, s):
    x = jax.lax.cond(s["active"], lambda x: update(x, s), lambda x: x, x)
    return x, None

  return step


def sample(model_fn: ModelFn, noise: jax.Array, *, cond: Any, uncond: Any = None,
           objective: str = "flow", sampler: str = "euler", num_steps: int = 30,
           guidance_scale=1.0, shift=1.0, num_train_timesteps: int = 1000,
           beta_schedule: str = "linear", timestep_spacing: str = "trailing",
           frames: conditioning.FrameCondition | None = None, init: jax.Array | None = None,
           strength: float | None = None, guidance_interval=(0.0, 1.0)) -> jax.Array:
  """Denoise `noise` ([B, T, H, W, C], the t=1 sample) to x0 in one `lax.scan`; jittable.

  `uncond` None or `guidance_scale == 1` -> a single conditional pass per step. `shift` is the
  flow timestep shift (a Python float: the grid is built at trace time). `frames` holds known
  latent frames (diffusion/conditioning.py: image-to-video, extension, loops, ...); `init` with
  `strength` in (0, 1] edits: the loop starts from `init` noised to t = strength (SDEdit) and
  runs only the steps below it. Returns noise.dtype.
  """
  sched = make_schedule(objective, sampler, num_steps, shift, num_train_timesteps,
                        beta_schedule, timestep_spacing)
  x = noise.astype(jnp.float32)
  if init is not None:
    if objective != "flow":
      raise ValueError("editing (init + strength) needs diffusion.objective='flow'")
    if strength is None or not 0.0 < float(strength) <= 1.0:
      raise ValueError(f"edit strength={strength!r} must be in (0, 1] (1 = ignore the input)")
    active = sched["t_cur"] <= float(strength) + 1e-6
    active[-1] = True
    sched["active"] = active
    x = flow.interpolate(init.astype(jnp.float32), x, jnp.full((x.shape[0],),
                                                              sched["t_cur"][active][0]))
  fn = conditioning.conditioned(
      guided_model(model_fn, cond, uncond, guidance_scale, guidance_interval), frames)
  step = make_step(fn, objective, sampler)

  def held_step(x, s):
    x, _ = step(x, s)
    return conditioning.hold(x, frames), None

  x, _ = jax.lax.scan(held_step, conditioning.hold(x, frames), jax.tree.map(jnp.asarray, sched))
  return x.astype(noise.dtype)


def sample_in_chunks(model_fn: ModelFn, noise: jax.Array, *, cond: Any, uncond: Any = None,
                     objective: str = "flow", sampler: str = "euler", num_steps: int = 30,
                     guidance_scale=1.0, shift=1.0, num_train_timesteps: int = 1000,
                     beta_schedule: str = "linear", timestep_spacing: str = "trailing",
                     steps_per_chunk: int = 10, progress: bool = True,
                     guidance_interval=(0.0, 1.0)) -> jax.Array:
  """`sample`, but the scan runs `steps_per_chunk` steps per call from Python, with a tqdm bar.

  One chunk function is compiled and reused: the last chunk is padded with inactive (no-op)
  steps, so every call has the same shapes. Same arithmetic as `sample`, same result.
  """
  if steps_per_chunk < 1:
    raise ValueError(f"steps_per_chunk={steps_per_chunk} must be >= 1")
  sched = make_schedule(objective, sampler, num_steps, shift, num_train_timesteps,
                        beta_schedule, timestep_spacing)
  n_chunks = -(-num_steps // steps_per_chunk)
  pad = n_chunks * steps_per_chunk - num_steps
  sched = {k: np.concatenate([v, np.repeat(v[-1:], pad)]) for k, v in sched.items()}
  sched["active"][num_steps:] = False
  gs = guidance_scale

  @jax.jit
  def run_chunk(x, chunk, cond, uncond):
    step = make_step(guided_model(model_fn, cond, uncond, gs, guidance_interval), objective,
                     sampler)
    return jax.lax.scan(step, x, chunk)[0]

  x = noise.astype(jnp.float32)
  bar = tqdm(total=num_steps, desc=f"{sampler} x{num_steps}", disable=not progress)
  for i in range(n_chunks):
    chunk = {k: v[i * steps_per_chunk:(i + 1) * steps_per_chunk] for k, v in sched.items()}
    x = run_chunk(x, chunk, cond, uncond)
    x.block_until_ready()
    bar.update(int(chunk["active"].sum()))
  bar.close()
  return x.astype(noise.dtype)
