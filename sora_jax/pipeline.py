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
from sora_jax import runs
from sora_jax import safety
from sora_jax.data import prompts as prompt_checks
from sora_jax.diffusion import conditioning
from sora_jax.io import outputs
from sora_jax.parallel import mesh as mesh_lib
from sora_jax.parallel import rules as rules_lib
from sora_jax.systems.t2v import T2VSystem
from sora_jax.systems.vae import to_model_range, to_uint8

# The sampler's size arguments in the words of the CLI and of __call__ (errors name these).
SIZE_FLAGS = {"data.frames": "--frames", "data.height": "--height", "data.width": "--width"}


def parse_aspect(aspect: str) -> tuple[int, int]:
  """'16:9' -> (16, 9) as (width, height) parts; '9:16' is portrait."""
  parts = str(aspect).split(":")
  try:
    w, h = (int(p) for p in parts)
  except ValueError:
    w = h = 0
  if len(parts) != 2 or w < 1 or h < 1:
    raise config_lib.ConfigError(f"--aspect={aspect!r} is not WIDTH:HEIGHT, e.g. 16:9, 9:16, "
                                 "1:1 or 4:3")
  return w, h


def _positive(value, default: int, flag: str) -> int:
  """None → the default; anything but a positive integer is an error naming the flag."""
  if value is None:
    return int(default)
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
    raise config_lib.ConfigError(f"{flag}={value!r} must be a positive integer")
  return int(value)


class TextToVideo:
  """Prompts → uint8 video with a T2VSystem and its params; imports nothing from training.

  Every prompt passes the safety classifier (`safety.py`; `classifier=` replaces the default
  policy) and the prompt checks of `data/prompts.py` (UTF-8, not empty, within the text
  encoder's length: `on_long='error'|'warn'`) before anything is sampled.
  """

  def __init__(self, system: T2VSystem, params, mesh=None, *, classifier=None,
               on_long: str = "error"):
    self.system = system
    self.config = system.config
    self.mesh = mesh
    self.classifier, self.on_long = classifier, on_long
    self._sharded: dict = {}
    if mesh is not None:
      self.rules = rules_lib.rules_for(self.config.rules)
      boxed = jax.eval_shape(system.init, jax.random.key(0), system.example_batch())
      self.param_shardings = rules_lib.logical_to_sharding(boxed, mesh, self.rules)
      params = jax.device_put(params, self.param_shardings)
    self.params = params

  @classmethod
  def from_workdir(cls, workdir: str, step: int | None = None, use_ema: bool = True, mesh=None,
                   sample: dict | None = None, **kw):
    """`sample`: overrides of the run's config.sample (runs.open_t2v)."""
    system, params = runs.open_t2v(workdir, use_ema=use_ema, step=step, sample=sample)
    return cls(system, params, mesh=mesh, **kw)

  def check_prompts(self, prompts: list[str]) -> list[str]:
    """Text (UTF-8, not empty, length), then the safety policy; raises PromptError or
    PromptRefused."""
    prompts = prompt_checks.check_prompts(prompts, self.system.tokenizer,
                                          int(self.config.text.max_len), on_long=self.on_long)
    safety.check_prompt(prompts, self.classifier)
    return prompts

  def resolve_size(self, num_frames=None, height=None, width=None, aspect=None,
                   seconds=None) -> tuple[int | None, int | None, int | None]:
    """Frames / height / width from the request: `seconds` becomes the nearest representable
    frame count at the model's fps; `aspect` ('16:9') with `height` or `width` gives the other
    side, snapped to what the VAE and patch represent; with neither, the short side is the
    training size's short side (16:9 at 64x64 training: 64x112; 9:16: 112x64).
    Explicit sizes are returned as given (checked, with the nearest valid ones, by `sizes`)."""
    steps = config_lib.size_steps(self.config)
    if seconds is not None:
      if num_frames is not None:
        raise config_lib.ConfigError("--seconds and --frames both given; pass one")
      if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
        raise config_lib.ConfigError(f"--seconds={seconds!r} must be a positive number")
      num_frames = config_lib.snap(seconds * float(self.config.data.fps), *steps["frames"])
    if aspect is not None:
      aw, ah = parse_aspect(aspect)
      if height is not None and width is not None:
        raise config_lib.ConfigError("--aspect with both --height and --width: give --aspect "
                                     "with one of them (or neither: the training height)")
      if height is None and width is None:   # the short side keeps the training short side
        short = min(int(self.config.data.height), int(self.config.data.width))
        height, width = (short, None) if aw >= ah else (None, short)
      if width is not None:
        height = config_lib.snap(width * ah / aw, *steps["height"])
      else:
        width = config_lib.snap(height * aw / ah, *steps["width"])
    return num_frames, height, width

  def sizes(self, num_frames=None, height=None, width=None, num_steps=None,
            guidance_scale=None) -> tuple[tuple[int, ...], int, float]:
    """(latent shape, steps, guidance) for the request, every value checked and named by its
    flag: `--frames 0` is an error, not 'the default'."""
    d, s = self.config.data, self.config.sample
    shape = self.latent_shape(_positive(num_frames, d.frames, "--frames"),
                              _positive(height, d.height, "--height"),
                              _positive(width, d.width, "--width"))
    steps = _positive(num_steps, s.steps, "--steps")
    guidance = float(s.guidance_scale if guidance_scale is None else guidance_scale)
    if not math.isfinite(guidance):
      raise config_lib.ConfigError(f"--guidance={guidance_scale!r} must be a finite number")
    return shape, steps, guidance

  def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, ...]:
    cfg = self.config.copy_and_resolve_references()
    with cfg.unlocked():
      cfg.data.frames, cfg.data.height, cfg.data.width = num_frames, height, width
      cfg.data.batch_size = 1
      cfg.mesh.data = -1
    config_lib.check_video_geometry(cfg, flag_names=SIZE_FLAGS)  # names the argument, the fix
    return self.system.vae.latent_shape(num_frames, height, width)

  @functools.partial(jax.jit, static_argnums=(0, 5, 6, 7, 8))
  def _generate(self, params, tokens, mask, rng, latent_shape, num_steps, guidance_scale,
                decode):
    kw = dict(latent_shape=latent_shape, num_steps=num_steps, guidance_scale=guidance_scale)
    if decode:
      return self.system.generate(params, tokens, mask, rng, **kw)
    return self.system.sample_latents(params, tokens, mask, rng, **kw)

  def __call__(self, prompt: str | list[str], num_frames: int | None = None,
               height: int | None = None, width: int | None = None,
               num_steps: int | None = None, guidance_scale: float | None = None,
               seed: int = 0, *, aspect: str | None = None,
               seconds: float | None = None) -> np.ndarray:
    """uint8 frames [T, H, W, 3] for one prompt, [B, T, H, W, 3] for a list.

    Size: frames / height / width, or `aspect` ('16:9', '9:16', '1:1', '4:3') with a height or
    width, and `seconds` (see `resolve_size`); num_frames=1 is text-to-image.
    With vae.encode_chunk / vae.tile set, the latents are decoded chunk by chunk (and tile by
    tile) outside the sampling loop, so a long video decodes in flat memory.
    """
    single = not isinstance(prompt, (list, tuple))
    prompts = self.check_prompts([prompt] if single else list(prompt))
    num_frames, height, width = self.resolve_size(num_frames, height, width, aspect, seconds)
    args = self.sizes(num_frames, height, width, num_steps, guidance_scale)
    tokens, mask = self.system.encode_prompts(prompts)
    one_pass = not self.system.vae.chunked
    if self.mesh is None:
      out = self._generate(self.params, jnp.asarray(tokens), jnp.asarray(mask),
                           jax.random.key(seed), *args, one_pass)
    else:
      out = self._generate_sharded(tokens, mask, seed, *args, one_pass)
    video = np.asarray(out if one_pass else self.system.decode_long(jnp.asarray(out)))
    if not np.isfinite(video).all():
      raise FloatingPointError(
          f"the sampler produced non-finite values ({np.size(video) - np.isfinite(video).sum()} "
          f"of {np.size(video)}): the weights are damaged or the run diverged; nothing written")
    frames = ((video + 1.0) * 127.5).round().clip(0, 255).astype(np.uint8)
    return frames[0] if single else frames

  # ---- every mode: known latent frames, loops, edits (diffusion/conditioning.py) -----------

  @functools.partial(jax.jit, static_argnums=(0, 7, 8, 9, 10))
  def _generate_cond(self, params, tokens, mask, rng, frames, init, latent_shape, num_steps,
                     guidance_scale, strength):
    return self.system.sample_latents(params, tokens, mask, rng, latent_shape=latent_shape,
                                      num_steps=num_steps, guidance_scale=guidance_scale,
                                      frames=frames, init=init, strength=strength)

  @functools.partial(jax.jit, static_argnums=0)
  def _encode(self, video):
    return self.system.encode(video)

  def encode(self, frames: np.ndarray) -> np.ndarray:
    """uint8 (or [-1, 1]) frames [T, H, W, 3] -> scaled latents [1 + (T - 1) / tc, h, w, c]."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
      raise config_lib.ConfigError(f"an input video must be frames [T, H, W, 3]; got "
                                   f"{frames.shape}")
    return np.asarray(self._encode(jnp.asarray(to_model_range(frames))[None]))[0]

  def _still(self, image: np.ndarray) -> np.ndarray:
    """An image as one latent frame of a later chunk: tc + 1 copies encoded, the last latent."""
    tc = int(self.config.vae.temporal_compression)
    return self.encode(np.repeat(np.asarray(image)[None], tc + 1, 0))[-1:]

  def generate(self, prompt: str, *, known: dict[int, np.ndarray] | None = None,
               loop: bool = False, edit: np.ndarray | None = None,
               strength: float | None = None, num_frames=None, height=None, width=None,
               aspect=None, seconds=None, num_steps=None, guidance_scale=None,
               seed: int = 0, return_latents: bool = False) -> np.ndarray:
    """One video for `prompt` under frame conditions, in the one sampling loop: `known` maps a
    latent frame index (negative: from the end) to scaled latents [n, h, w, c] held there;
    `loop` ties the last latent frame to the first; `edit` (frames) with `strength` starts from
    that video noised to t = strength. The modes below build these. Returns uint8 frames (or,
    `return_latents`, the scaled latents [T, h, w, c] the frames decode from)."""
    (prompt,) = self.check_prompts([prompt])
    if edit is not None:
      num_frames, height, width = np.asarray(edit).shape[:3]
    num_frames, height, width = self.resolve_size(num_frames, height, width, aspect, seconds)
    shape, steps, guidance = self.sizes(num_frames, height, width, num_steps, guidance_scale)
    frames = conditioning.place(shape[0], shape[1:], at=known, loop=loop)
    init = None if edit is None else jnp.asarray(self.encode(edit))[None]
    tokens, mask = self.system.encode_prompts([prompt])
    lat = self._generate_cond(self.params, jnp.asarray(tokens), jnp.asarray(mask),
                              jax.random.key(seed), frames, init, shape, steps, guidance,
                              None if strength is None else float(strength))
    if return_latents:
      return np.asarray(lat)[0]
    video = np.asarray(self.system.decode_long(lat) if self.system.vae.chunked else
                       self.system.decode(lat))[0]
    return ((video + 1.0) * 127.5).round().clip(0, 255).astype(np.uint8)

  def image_to_video(self, prompt: str, image: np.ndarray, **kw) -> np.ndarray:
    """The image [H, W, 3] is frame 0; the rest follows the prompt (size from the image)."""
    image = np.asarray(image)
    kw.setdefault("height", image.shape[0]), kw.setdefault("width", image.shape[1])
    return self.generate(prompt, known={0: self.encode(image[None])}, **kw)

  def extend(self, prompt: str, video: np.ndarray, direction: str = "forward", **kw) -> np.ndarray:
    """A longer video that begins (forward) or ends (backward) with `video` [1 + tc*k, H, W, 3];
    the total length is num_frames / seconds (default: twice the given clip)."""
    video = np.asarray(video)
    if direction not in ("forward", "backward"):
      raise config_lib.ConfigError(f"--extend={direction!r} must be 'forward' or 'backward'")
    kw.setdefault("height", video.shape[1]), kw.setdefault("width", video.shape[2])
    if kw.get("num_frames") is None and kw.get("seconds") is None:
      kw["num_frames"] = 2 * len(video) - 1
    lat = self.encode(video)
    # Backward: the clip's first latent frame is its first pixel frame encoded alone, which no
    # later position of the canvas holds; its last k latents (4k frames) end the video.
    known = {0: lat} if direction == "forward" else {-(len(lat) - 1): lat[1:]}
    return self.generate(prompt, known=known, **kw)

  def loop(self, prompt: str, **kw) -> np.ndarray:
    """A video whose last latent frame is its first: played on repeat, it has no seam."""
    return self.generate(prompt, loop=True, **kw)

  def connect(self, prompt: str, video_a: np.ndarray, video_b: np.ndarray,
              **kw) -> np.ndarray:
    """Begins with `video_a`, ends with the end of `video_b`, a generated transition between."""
    a, b = self.encode(video_a), self.encode(video_b)
    kw.setdefault("height", np.shape(video_a)[1]), kw.setdefault("width", np.shape(video_a)[2])
    if kw.get("num_frames") is None and kw.get("seconds") is None:
      kw["num_frames"] = len(video_a) + len(video_b) - 1
    return self.generate(prompt, known={0: a, -(len(b) - 1): b[1:]}, **kw)

  def keyframes(self, prompt: str, images: dict[int, np.ndarray], **kw) -> np.ndarray:
    """`images` maps a pixel frame index to an image [H, W, 3] the video passes through there
    (placed on the latent frame that holds that pixel frame)."""
    tc = int(self.config.vae.temporal_compression)
    known = {}
    for f, img in images.items():
      j = 0 if f == 0 else 1 + (int(f) - 1) // tc
      known[j] = self.encode(np.asarray(img)[None]) if j == 0 else self._still(img)
    return self.generate(prompt, known=known, **kw)

  def retake(self, prompt: str, video: np.ndarray, start: int, end: int, **kw) -> np.ndarray:
    """Regenerates pixel frames [start, end) of `video` (whole latent frames around them) under
    `prompt`; every latent frame outside the span is kept."""
    video = np.asarray(video)
    tc = int(self.config.vae.temporal_compression)
    lat = self.encode(video)
    first = 0 if start <= 0 else 1 + (int(start) - 1) // tc
    last = 0 if end <= 1 else 1 + (int(end) - 2) // tc
    if not 0 <= first <= last < len(lat):
      raise config_lib.ConfigError(f"--retake={start}:{end} is not a span of the video's "
                                   f"{len(video)} frames")
    known = {0: lat[:first]} if first else {}
    if last + 1 < len(lat):
      known[last + 1] = lat[last + 1:]
    return self.generate(prompt, known=known, num_frames=len(video), height=video.shape[1],
                         width=video.shape[2], **kw)

  def edit_video(self, prompt: str, video: np.ndarray, strength: float = 0.6,
                 **kw) -> np.ndarray:
    """SDEdit: `video` noised to t = strength, then denoised under `prompt` (0 keeps it, 1
    ignores it)."""
    return self.generate(prompt, edit=np.asarray(video), strength=strength, **kw)

  def resolve_extend_guidance(self, extend_guidance=None, guidance_scale=None) -> float:
    """The CFG scale of a long video's windows after the first: the given one, else
    config.sample.extend_guidance_scale, else (0) the first window's."""
    if extend_guidance is None:
      extend_guidance = (float(self.config.sample.extend_guidance_scale)
                         or self.sizes(guidance_scale=guidance_scale)[2])
    if not math.isfinite(float(extend_guidance)):
      raise config_lib.ConfigError(f"--extend_guidance={extend_guidance!r} must be a finite "
                                   "number")
    return float(extend_guidance)

  def long_video(self, prompt: str, **kw) -> np.ndarray:
    """A video of any length in overlapping windows (`long_videos` for one prompt)."""
    return self.long_videos([prompt], **kw)[0]

  def long_videos(self, prompts: list[str], *, seconds=None, num_frames=None, height=None,
                  width=None, aspect=None, window: int | None = None, overlap: int = 1,
                  num_steps=None, guidance_scale=None, extend_guidance=None, seed: int = 0,
                  progress: bool = False) -> list[np.ndarray]:
    """Videos of any length in overlapping windows, one per prompt, all prompts in each sampler
    call: the first window is text-to-video, every later one extends the last `overlap` latent
    frames of the one before (the same compiled conditional sampler each time). Each window's new
    latents are decoded as they come, the causal decoder's cache carried over (the frames of one
    decode of all the latents), so memory is that of one window whatever the duration.
    `extend_guidance`: the CFG scale of the windows after the first (default:
    config.sample.extend_guidance_scale, or the first window's when that is 0).
    uint8 [T, H, W, 3] per prompt."""
    prompts = self.check_prompts(list(prompts))
    num_frames, height, width = self.resolve_size(num_frames, height, width, aspect, seconds)
    total = self.sizes(num_frames, height, width)[0][0]           # latent frames wanted
    win = int(window or self.system.latent_shape[0])
    if not 0 < overlap < win:
      raise config_lib.ConfigError(f"overlap={overlap} latent frames must be in [1, window="
                                   f"{win})")
    tc = int(self.config.vae.temporal_compression)
    shape, steps, guidance = self.sizes(1 + tc * (win - 1), height, width, num_steps,
                                        guidance_scale)
    later = self.resolve_extend_guidance(extend_guidance, guidance)
    tokens, mask = (jnp.asarray(a) for a in self.system.encode_prompts(prompts))
    n, vae = len(prompts), self.system.vae
    chunks, known, cache = [], None, None
    made = 0                                                      # latent frames decoded
    while made < total:
      frames = conditioning.place(win, shape[1:], n, at=known)
      out = self._generate_cond(self.params, tokens, mask, jax.random.key(seed + len(chunks)),
                                frames, None, shape, steps,
                                guidance if known is None else later, None)
      new = out[:, 0 if known is None else overlap:][:, :total - made]
      x, cache = vae.decode_next(self.system.vae_params, new / self.system.scale, cache)
      made += new.shape[1]
      chunks.append(to_uint8(x))
      # Latents, not the frames re-encoded as a clip start (which training holds at position 0):
      # the decode / encode round trip per window moved the background's colour ~40 % further
      # over a minute, and nothing else measured changed (RESULTS.md, issue 15, session 25).
      known = {0: np.asarray(out[:, -overlap:])}
      if progress:
        print(f"window {len(chunks)}: {made}/{total} latent frames", flush=True)
    return list(np.concatenate(chunks, axis=1))

  def many(self, prompts: list[str], sizes: list[dict], *, num_steps: int | None = None,
           guidance_scale: float | None = None, seed: int = 0) -> list[np.ndarray]:
    """One video per prompt, each at its own size: `sizes[i]` holds that prompt's size keywords
    (num_frames / height / width / aspect / seconds). Every size is checked before anything is
    sampled; prompts of one size share one sampler call. Returns uint8 [T, H, W, 3] per prompt."""
    if len(sizes) != len(prompts):
      raise config_lib.ConfigError(f"{len(prompts)} prompts but {len(sizes)} sizes; give one "
                                   "size per prompt")
    prompts = self.check_prompts(list(prompts))
    resolved = []
    for size in sizes:
      f, h, w = self.resolve_size(**{"num_frames": None, "height": None, "width": None, **size})
      shape = self.sizes(f, h, w)[0]
      resolved.append((f or self.config.data.frames, h or self.config.data.height,
                       w or self.config.data.width, shape))
    out: list[np.ndarray | None] = [None] * len(prompts)
    for key in dict.fromkeys(resolved):
      idx = [i for i, r in enumerate(resolved) if r == key]
      videos = self([prompts[i] for i in idx], *key[:3], num_steps=num_steps,
                    guidance_scale=guidance_scale, seed=seed)
      for i, v in zip(idx, videos):
        out[i] = v
    return out

  def _generate_sharded(self, tokens, mask, seed, latent_shape, num_steps, guidance_scale,
                        decode=True):
    """The sampling loop compiled for `self.mesh`: prompts (and CFG pairs) over (data, fsdp)."""
    n = len(tokens)
    axes = mesh_lib.batch_axes(self.mesh)
    ways = math.prod(self.mesh.shape[a] for a in axes)
    pad = -n % ways
    if pad:  # repeat the last prompt; its rows are dropped below
      tokens = np.concatenate([tokens, np.repeat(tokens[-1:], pad, 0)])
      mask = np.concatenate([mask, np.repeat(mask[-1:], pad, 0)])
    key = (len(tokens), latent_shape, num_steps, guidance_scale, decode)
    if key not in self._sharded:
      batch = NamedSharding(self.mesh, PartitionSpec(axes or None))
      replicated = rules_lib.replicated(self.mesh)
      fn = functools.partial(self.system.generate if decode else self.system.sample_latents,
                             latent_shape=latent_shape, num_steps=num_steps,
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

  def save(self, frames: np.ndarray, out: str, prompt: str | None = None, *, seed: int = 0,
           overwrite: bool = False, unsigned: bool = False, prompt_in_manifest: bool = True,
           hooks: tuple = (), sampler: dict | None = None) -> dict:
    """Writes `frames` labelled: screened by `hooks`, watermarked, C2PA-signed (io/outputs.py).
    Returns the write report (path, manifest location)."""
    frames = np.asarray(frames)
    frames = frames[None] if frames.ndim == 3 else frames
    outputs.check_output_path(out, frames.shape[0], overwrite=overwrite)
    return outputs.write_labelled(
        out, frames, fps=self.config.data.fps, manifest=self.manifest(prompt, seed, sampler,
                                                                     prompt_in_manifest, out),
        watermark_payload=self.watermark_payload, unsigned=unsigned, hooks=hooks,
        prompt=prompt or "")

  @functools.cached_property
  def weights_digest(self) -> str:
    from sora_jax.io import provenance
    return provenance.weights_digest(jax.device_get(self.params))

  @property
  def watermark_payload(self) -> int:
    from sora_jax.io import watermark
    return watermark.payload_for(self.weights_digest)

  def manifest(self, prompt, seed, sampler, prompt_in_manifest=True, out=None) -> dict:
    from sora_jax import __version__
    from sora_jax.io import provenance
    s = self.config.sample
    settings = dict(sampler=s.sampler, steps=int(s.steps), guidance_scale=float(s.guidance_scale),
                    guidance_interval=[float(v) for v in s.guidance_interval],
                    layout_prior_strength=float(s.layout_prior_strength),
                    objective=self.config.diffusion.objective, shift=str(self.config.diffusion.shift))
    settings.update(sampler or {})
    return provenance.manifest_for(
        prompt=prompt if prompt_in_manifest else None, seed=int(seed), sampler=settings,
        weights_digest=self.weights_digest, model=f"sora_jax t2v {self.config.model.variant}",
        version=__version__, title=os.path.basename(out) if out else None)

  def __hash__(self):  # static self for jax.jit: one compiled sampler per pipeline object
    return id(self)

  def __eq__(self, other):
    return self is other

