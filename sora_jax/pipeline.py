"""TextToVideo: the user-facing call.

  t2v = TextToVideo.from_workdir("runs/t2v")
  frames = t2v("a red circle bounces to the right", num_frames=17, height=64, width=64, seed=0)
  t2v.save(frames, "video.mp4")

Frames, height and width may differ from training (RoPE-3D positions extend to unseen grids)
as long as they fit the VAE compression and the patch size.
"""
from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from sora_jax import config as config_lib
from sora_jax.models import vae as vae_lib


class TextToVideo:

  def __init__(self, config, params, task=None):
    from sora_jax.train.t2v_task import T2VTask
    self.config = config
    self.task = task or T2VTask(config)
    self.params = params

  @classmethod
  def from_workdir(cls, workdir: str, step: int | None = None, use_ema: bool = True):
    from sora_jax.train import export as export_lib
    from sora_jax.train.loop import load_run_config
    from sora_jax.train.state import unbox
    from sora_jax.train.t2v_task import T2VTask
    if not os.path.exists(os.path.join(workdir, "config.json")):
      raise FileNotFoundError(f"{workdir} has no config.json: is it a `sora-jax train` workdir?")
    config = load_run_config(workdir)
    with config.unlocked():
      config.vae_workdir = export_lib.resolve_run_path(config.vae_workdir, workdir)
    task = T2VTask(config)
    abstract = unbox(jax.eval_shape(task.init, jax.random.key(0), _dummy_batch(task)),
                     apply_constraint=False)
    params = export_lib.load_params(workdir, abstract, step=step,
                                    key="ema_params" if use_ema else "params")
    return cls(config, params, task)

  def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, ...]:
    cfg = self.config.copy_and_resolve_references()
    with cfg.unlocked():
      cfg.data.frames, cfg.data.height, cfg.data.width = num_frames, height, width
      cfg.data.batch_size = 1
      cfg.mesh.data = -1
    config_lib.check_video_geometry(cfg)  # names the argument and the fix
    return vae_lib.latent_shape(num_frames, height, width, self.task.vae_cfg)

  @functools.partial(jax.jit, static_argnums=(0, 5, 6, 7))
  def _generate(self, params, tokens, mask, rng, latent_shape, num_steps, guidance_scale):
    return self.task.generate(params, tokens, mask, rng, latent_shape=latent_shape,
                              num_steps=num_steps, guidance_scale=guidance_scale)

  def __call__(self, prompt: str | list[str], num_frames: int | None = None,
               height: int | None = None, width: int | None = None,
               num_steps: int | None = None, guidance_scale: float | None = None,
               seed: int = 0) -> np.ndarray:
    """uint8 frames [T, H, W, 3] for one prompt, [B, T, H, W, 3] for a list."""
    d, s = self.config.data, self.config.sample
    single = isinstance(prompt, str)
    prompts = [prompt] if single else list(prompt)
    shape = self.latent_shape(num_frames or d.frames, height or d.height, width or d.width)
    tokens, mask = self.task.encode_prompts(prompts)
    video = self._generate(self.params, jnp.asarray(tokens), jnp.asarray(mask),
                           jax.random.key(seed), shape, int(num_steps or s.steps),
                           float(s.guidance_scale if guidance_scale is None else guidance_scale))
    frames = ((np.asarray(video) + 1.0) * 127.5).round().clip(0, 255).astype(np.uint8)
    return frames[0] if single else frames

  def save(self, frames: np.ndarray, out: str, prompt: str | None = None) -> str:
    from sora_jax.io import video as video_io
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    video_io.write_video(out, frames, fps=self.config.data.fps)
    return out

  def __hash__(self):  # static self for jax.jit: one compiled sampler per pipeline object
    return id(self)

  def __eq__(self, other):
    return self is other


def _dummy_batch(task) -> dict:
  L = task.config.text.max_len
  return {"latents": jnp.zeros((1, *task.latent_shape), jnp.float32),
          "tokens": jnp.zeros((1, L), jnp.int32), "text_mask": jnp.ones((1, L), bool)}
