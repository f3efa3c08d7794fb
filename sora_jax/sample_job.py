"""One checked sampling job, `sora-jax sample` / `demo`: prompt → labelled file.

Everything that can be wrong is checked before the model is loaded or anything compiles, in
the order a user would want to hear it: the output path and format, the signing key, the
prompt (safety policy, UTF-8, length), the sizes (named by their flags), the memory the
request needs. Then it samples, screens the frames, watermarks, writes and signs.
"""
from __future__ import annotations

import sys

from sora_jax import runs, safety, sampling_budget
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


def run(t2v: TextToVideo, prompt: str, out: str, *, num_frames=None, height=None, width=None,
        num_steps=None, guidance_scale=None, seed: int = 0, overwrite: bool = False,
        unsigned: bool = False, prompt_in_manifest: bool = True, hooks=(), aspect=None,
        seconds=None) -> dict:
  """Samples `prompt` with `t2v` and writes the labelled file; returns the write report.
  `aspect` ('16:9') and `seconds` resolve to a size as in `TextToVideo.resolve_size`."""
  (prompt,) = t2v.check_prompts([prompt])
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
                     frame_hooks=(), on_long: str = "error", **kw) -> dict:
  """preflight, then load the run (refusing another kind of workdir) and `run`."""
  classifier, hooks = preflight(prompt, out, num_frames=kw.get("num_frames"),
                                overwrite=kw.get("overwrite", False),
                                unsigned=kw.get("unsigned", False),
                                safety_policy=safety_policy, frame_hooks=frame_hooks)
  system, params = runs.open_t2v(workdir)
  t2v = TextToVideo(system, params, classifier=classifier, on_long=on_long)
  return run(t2v, prompt, out, hooks=hooks, **kw)
