"""One checked sampling job, `sora-jax sample` / `demo`: prompt → labelled file.

Everything that can be wrong is checked before the model is loaded or anything compiles, in
the order a user would want to hear it: the output path and format, the signing key, the
prompt (safety policy, UTF-8, length), the sizes (named by their flags), the memory the
request needs. Then it samples, screens the frames, watermarks, writes and signs.
"""
from __future__ import annotations

import os
import sys

import numpy as np

from sora_jax import runs, safety, sampling_budget
from sora_jax.config import ConfigError
from sora_jax.data import prompts as prompt_checks
from sora_jax.io import outputs, provenance
from sora_jax.pipeline import TextToVideo


def preflight(prompt: str, out: str, *, num_frames=None, overwrite=False, unsigned=False,
              safety_policy: str = "", frame_hooks=()):
  """Checks that need no model: output, key, safety. Returns (classifier, hooks)."""
  if num_frames is not None and (not isinstance(num_frames, int) or num_frames < 1):
    from sora_jax.config import ConfigError
    raise ConfigError(f"--frames={num_frames!r} must be a positive integer")
  outputs.check_output_path(out, num_frames, overwrite=overwrite)
  if not unsigned and provenance.find_keys() is None:
    raise outputs.OutputError(
        "no C2PA signing key: every output carries signed content credentials. Make a local "
        "test key with `sora-jax keys init` (or set SORA_JAX_C2PA_CERT / SORA_JAX_C2PA_KEY), "
        "or pass --unsigned to write without credentials")
  classifier = safety.load_classifier(safety_policy)
  safety.check_prompt(prompt, classifier)
  hooks = tuple(safety.load_frame_hook(h) for h in frame_hooks) + (safety.NonFiniteOrBlankHook(),)
  return classifier, hooks


MODES = ("image", "video", "loop", "connect", "keyframes", "edit")


def load_input(t2v: TextToVideo, path: str, height=None, width=None,
               still: bool = False) -> np.ndarray:
  """A user's image or video as uint8 frames at the model's fps, centre-cropped to a size the
  model represents (the given one, else the file's aspect with the training short side), and
  cut to 1 + tc*k frames."""
  from sora_jax.io import video as video_io
  if not os.path.exists(path):
    raise FileNotFoundError(f"input {path!r} does not exist")
  if path.lower().endswith((".png", ".jpg", ".jpeg", ".webp", ".bmp")):
    from PIL import Image
    frames = np.asarray(Image.open(path).convert("RGB"))[None]
  else:
    frames = video_io.read_video(path, fps=float(t2v.config.data.fps))[0]
  if still:
    frames = frames[:1]
  if height is None or width is None:
    _, height, width = t2v.resolve_size(None, height, width,
                                        f"{frames.shape[2]}:{frames.shape[1]}")
  frames = video_io.resize_center_crop(frames, int(height), int(width))
  tc = int(t2v.config.vae.temporal_compression)
  return frames[:1 + (len(frames) - 1) // tc * tc]


def _seconds_span(spec: str, fps: float, flag: str) -> tuple[int, int]:
  try:
    a, b = (float(x) for x in spec.split(":"))
  except ValueError:
    raise ConfigError(f"{flag}={spec!r} is not START:END in seconds, e.g. 1.0:2.5") from None
  if not 0 <= a < b:
    raise ConfigError(f"{flag}={spec!r}: need 0 <= START < END")
  return int(round(a * fps)), int(round(b * fps)) + 1


def run_mode(t2v: TextToVideo, prompt: str, *, image=None, video=None, extend=None,
             retake=None, loop=False, connect=None, keyframes=None, edit=None, strength=None,
             **kw) -> np.ndarray | None:
  """The frame-conditioned modes (`--image`, `--video` with `--extend` or `--retake`, `--loop`,
  `--connect A,B`, `--keyframes T:PATH,...`, `--edit PATH --strength S`); None = plain t2v."""
  given = [m for m, v in (("--image", image), ("--video", video), ("--loop", loop),
                          ("--connect", connect), ("--keyframes", keyframes),
                          ("--edit", edit)) if v]
  if len(given) > 1:
    raise ConfigError(f"{' and '.join(given)}: give one mode at a time")
  if (extend or retake) and not video:
    raise ConfigError("--extend / --retake need --video PATH")
  if strength is not None and not edit:
    raise ConfigError("--strength is for --edit PATH")
  h, w, fps = kw.get("height"), kw.get("width"), float(t2v.config.data.fps)
  if image:
    return t2v.image_to_video(prompt, load_input(t2v, image, h, w, still=True)[0], **kw)
  if video:
    clip = load_input(t2v, video, h, w)
    if bool(extend) == bool(retake):
      raise ConfigError("--video needs --extend forward|backward or --retake START:END")
    if extend:
      return t2v.extend(prompt, clip, extend, **kw)
    start, end = _seconds_span(retake, fps, "--retake")
    return t2v.retake(prompt, clip, start, end, **{k: v for k, v in kw.items()
                                                    if k in ("num_steps", "guidance_scale",
                                                             "seed")})
  if loop:
    return t2v.loop(prompt, **kw)
  if connect:
    paths = [p for p in str(connect).split(",") if p]
    if len(paths) != 2:
      raise ConfigError(f"--connect={connect!r} must be two videos: A,B")
    a = load_input(t2v, paths[0], h, w)
    return t2v.connect(prompt, a, load_input(t2v, paths[1], a.shape[1], a.shape[2]), **kw)
  if keyframes:
    images = {}
    for part in str(keyframes).split(","):
      sec, _, path = part.partition(":")
      try:
        images[int(round(float(sec) * fps))] = path
      except ValueError:
        raise ConfigError(f"--keyframes entry {part!r} is not SECONDS:PATH") from None
    first = load_input(t2v, next(iter(images.values())), h, w, still=True)
    kw.setdefault("height", first.shape[1]), kw.setdefault("width", first.shape[2])
    return t2v.keyframes(prompt, {f: load_input(t2v, p, kw["height"], kw["width"],
                                                still=True)[0] for f, p in images.items()},
                         **kw)
  if edit:
    clip = load_input(t2v, edit, h, w)
    return t2v.edit_video(prompt, clip, 0.6 if strength is None else float(strength),
                          **{k: v for k, v in kw.items() if k in ("num_steps", "guidance_scale",
                                                                  "seed")})
  return None


def run(t2v: TextToVideo, prompt: str, out: str, *, num_frames=None, height=None, width=None,
        num_steps=None, guidance_scale=None, seed: int = 0, overwrite: bool = False,
        unsigned: bool = False, prompt_in_manifest: bool = True, hooks=(), aspect=None,
        seconds=None, overlap: int | None = None, extend_guidance: float | None = None,
        **modes) -> dict:
  """Samples `prompt` with `t2v` and writes the labelled file; returns the write report.
  `aspect` ('16:9') and `seconds` resolve to a size as in `TextToVideo.resolve_size`; `modes`
  are run_mode's (image-to-video, extension, loops, ...); `overlap` is --windows' latent frames
  shared by consecutive windows (default 1)."""
  (prompt,) = t2v.check_prompts([prompt])
  windows = modes.pop("windows", False)
  if overlap is not None and not windows:
    raise ConfigError("--overlap is the latent frames consecutive --windows share; give it "
                      "with --windows")
  if extend_guidance is not None and not windows:
    raise ConfigError("--extend_guidance is the CFG scale of --windows' later windows; give "
                      "it with --windows")
  if windows:
    if any(modes.values()):
      raise ConfigError("--windows is text-to-video in windows; give it without another mode")
    overlap = 1 if overlap is None else int(overlap)
    frames = t2v.long_video(prompt, seconds=seconds, num_frames=num_frames, height=height,
                            width=width, aspect=aspect, num_steps=num_steps,
                            guidance_scale=guidance_scale, seed=seed, overlap=overlap,
                            extend_guidance=extend_guidance, progress=True)
    outputs.check_output_path(out, len(frames), overwrite=overwrite)
    return t2v.save(frames, out, prompt, seed=seed, overwrite=overwrite, unsigned=unsigned,
                    prompt_in_manifest=prompt_in_manifest, hooks=hooks,
                    sampler={"mode": "windows", "overlap": overlap,
                             "extend_guidance": t2v.resolve_extend_guidance(extend_guidance,
                                                                            guidance_scale)})
  if any(modes.values()):
    frames = run_mode(t2v, prompt, num_frames=num_frames, height=height, width=width,
                      aspect=aspect, seconds=seconds, num_steps=num_steps,
                      guidance_scale=guidance_scale, seed=seed, **modes)
    outputs.check_output_path(out, len(frames), overwrite=overwrite)
    return t2v.save(frames, out, prompt, seed=seed, overwrite=overwrite, unsigned=unsigned,
                    prompt_in_manifest=prompt_in_manifest, hooks=hooks,
                    sampler={"mode": ",".join(k for k, v in modes.items() if v)})
  num_frames, height, width = t2v.resolve_size(num_frames, height, width, aspect, seconds)
  if t2v.config.data.name == "shapes_world":
    notice = prompt_checks.vocabulary_notice(prompt)
    if notice:
      print(notice, file=sys.stderr)
  shape, steps, guidance = t2v.sizes(num_frames, height, width, num_steps, guidance_scale)
  d = t2v.config.data
  frames_n, h, w = (num_frames or d.frames), (height or d.height), (width or d.width)
  outputs.check_output_path(out, frames_n, overwrite=overwrite)
  sampling_budget.check_fits(t2v, frames_n, h, w)
  frames = t2v(prompt, num_frames=frames_n, height=h, width=w, num_steps=steps,
               guidance_scale=guidance, seed=seed)
  del shape
  return t2v.save(frames, out, prompt, seed=seed, overwrite=overwrite, unsigned=unsigned,
                  prompt_in_manifest=prompt_in_manifest, hooks=hooks,
                  sampler={"steps": steps, "guidance_scale": guidance})


def run_from_workdir(workdir: str, prompt: str, out: str, *, safety_policy: str = "",
                     frame_hooks=(), on_long: str = "error", sample: dict | None = None,
                     **kw) -> dict:
  """preflight, then load the run (refusing another kind of workdir) and `run`. `sample`
  overrides the run's config.sample (runs.open_t2v)."""
  classifier, hooks = preflight(prompt, out, num_frames=kw.get("num_frames"),
                                overwrite=kw.get("overwrite", False),
                                unsigned=kw.get("unsigned", False),
                                safety_policy=safety_policy, frame_hooks=frame_hooks)
  system, params = runs.open_t2v(workdir, sample=sample)
  t2v = TextToVideo(system, params, classifier=classifier, on_long=on_long)
  return run(t2v, prompt, out, hooks=hooks, **kw)
