"""TextToVideo: the user-facing call.

  t2v = TextToVideo.from_workdir("runs/t2v")
  frames = t2v("a red circle bounces to the right", num_frames=17, height=64, width=64, seed=0)
  t2v.save(frames, "video.mp4")

Frames, height and width may differ from training (RoPE-3D positions extend to unseen grids)
as long as they fit the VAE compression and the patch size.

Sharded sampling: `TextToVideo(..., mesh=mesh)` (or `from_workdir(..., mesh=mesh)`) compiles the
whole loop with its own shardings: params by the config's logical rules, prompts — and so the CFG
pair the sampler batches — split over the mesh's batch axes (data, fsdp). The prompt batch is
padded to a multiple of those axes by repeating the last prompt; with `jax_threefry_partitionable`
(set by the CLI and the tests) the noise of the real rows does not depend on the padding, so a
video is the same on 1 and N devices up to float reassociation.
"""
from __future__ import annotations

import functools
import math
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from sora_jax import config as config_lib
from sora_jax.models import vae as vae_lib
from sora_jax.parallel import mesh as mesh_lib
from sora_jax.parallel import rules as rules_lib


class TextToVideo:

  def __init__(self, config, params, task=None, mesh=None):
    from sora_jax.train.t2v_task import T2VTask
    self.config = config
    self.task = task or T2VTask(config)
    self.mesh = mesh
    self._sharded: dict = {}
    if mesh is not None:
      self.rules = rules_lib.rules_for(config.rules)
      boxed = jax.eval_shape(self.task.init, jax.random.key(0), _dummy_batch(self.task))
      self.param_shardings = rules_lib.logical_to_sharding(boxed, mesh, self.rules)
      params = jax.device_put(params, self.param_shardings)
    self.params = params

  @classmethod
  def from_workdir(cls, workdir: str, step: int | None = None, use_ema: bool = True, mesh=None):
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
    return cls(config, params, task, mesh=mesh)

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
    args = (shape, int(num_steps or s.steps),
            float(s.guidance_scale if guidance_scale is None else guidance_scale))
    if self.mesh is None:
      video = self._generate(self.params, jnp.asarray(tokens), jnp.asarray(mask),
                             jax.random.key(seed), *args)
    else:
      video = self._generate_sharded(tokens, mask, seed, *args)
    frames = ((np.asarray(video) + 1.0) * 127.5).round().clip(0, 255).astype(np.uint8)
    return frames[0] if single else frames

  def _generate_sharded(self, tokens, mask, seed, latent_shape, num_steps, guidance_scale):
    """The sampling loop compiled for `self.mesh`: prompts (and CFG pairs) over (data, fsdp)."""
    n = len(tokens)
    axes = mesh_lib.batch_axes(self.mesh)
    ways = math.prod(self.mesh.shape[a] for a in axes)
    pad = -n % ways
    if pad:  # repeat the last prompt; its rows are dropped below
      tokens = np.concatenate([tokens, np.repeat(tokens[-1:], pad, 0)])
      mask = np.concatenate([mask, np.repeat(mask[-1:], pad, 0)])
    key = (len(tokens), latent_shape, num_steps, guidance_scale)
    if key not in self._sharded:
      batch = NamedSharding(self.mesh, PartitionSpec(axes or None))
      replicated = rules_lib.replicated(self.mesh)
      fn = functools.partial(self.task.generate, latent_shape=latent_shape, num_steps=num_steps,
                             guidance_scale=guidance_scale)
      # Replicated output: every process holds the whole (small) video; process 0 writes it.
      jitted = jax.jit(fn, in_shardings=(self.param_shardings, batch, batch, replicated),
                       out_shardings=replicated)
      with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
        self._sharded[key] = jitted.lower(self.params, tokens, mask,
                                          jax.random.key(0)).compile()
    # Global arrays built from host values every process holds (works multi-process too).
    glob = lambda x, sh: jax.make_array_from_callback(x.shape, sh, lambda i: x[i])  # noqa: E731
    batch = self._sharded[key].input_shardings[0][1]
    rng = jax.random.key_data(jax.random.key(seed))
    rng = jax.random.wrap_key_data(glob(np.asarray(rng), rules_lib.replicated(self.mesh)))
    video = self._sharded[key](self.params, glob(tokens, batch), glob(mask, batch), rng)
    return np.asarray(video)[:n]

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
