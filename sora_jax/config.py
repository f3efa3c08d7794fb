"""The config schema and its validation.

Every key, default and enum is stated once, in the section builders of config_sections.py
(re-exported here: `data_section`, `vae_section`, `model_section`, `text_section`,
`diffusion_section`, `sample_section`, `optim_section`, `train_section`, `mesh_section`);
`SCHEMA` and `ENUMS` are derived from them. `validate` makes every impossible combination fail
here, naming the key and the fix, before anything is traced or compiled. `complete` brings an
older run's config.json into today's schema. Video geometry (representable sizes, size mixes,
packing budgets) is checked in config_geometry.py and re-exported here.
"""
from __future__ import annotations

import copy
import math
import re
from typing import Any, Mapping

import ml_collections as mlc

from sora_jax import config_sections as S
from sora_jax.config_geometry import (  # noqa: F401  (re-exported: sizes and packing)
    Size, check_packing, check_video_geometry, parse_out_conv, parse_sizes, size_steps, snap)
from sora_jax.config_sections import ConfigError  # noqa: F401  (re-exported)
from sora_jax.config_sections import (  # noqa: F401  (the builders, re-exported)
    BEFORE_KEY_EXISTED, RETIRED, SECTIONS, TASK_SECTIONS, TASK_TOP_LEVEL, TASKS, TRAINABLE_TASKS,
    channel_mult_for, data_section, diffusion_section, mesh_section, model_section,
    optim_section, sample_section, text_section, train_section, vae_section)

# The keys each section may hold, DERIVED from the section builders (config_sections.py); a
# top-level scalar key maps to None. A key outside this table is a typo or a stale config.
SCHEMA: dict[str, frozenset[str] | None] = {
    **{key: None for key in S.TOP_LEVEL},
    **{name: frozenset(build().keys()) for name, build in SECTIONS.items()},
}
# "section.key" (or a top-level key) -> allowed values, declared beside each builder.
ENUMS: dict[str, tuple] = {
    **{key: choices for key, choices in S.TOP_LEVEL_ENUMS.items() if key != "task"},
    **{f"{name}.{key}": choices for name, enums in S.SECTION_ENUMS.items()
       for key, choices in enums.items()},
}
SAMPLERS_FOR = {"flow": ("euler", "heun"), "eps": ("ddim",), "v": ("ddim",)}


def _get(config: mlc.ConfigDict, dotted: str) -> Any:
  node = config
  for part in dotted.split("."):
    if part not in node:
      return None
    node = node[part]
  return node


def check_keys(config: mlc.ConfigDict) -> None:
  for section in config.keys():
    if section not in SCHEMA:
      raise ConfigError(f"config.{section} is not a known section; known: "
                        f"{', '.join(sorted(SCHEMA))}")
    allowed = SCHEMA[section]
    if allowed is None:
      continue
    for key in config[section].keys():
      if key not in allowed:
        close = [k for k in allowed if k.startswith(key[:3])]
        hint = f" (did you mean {', '.join(sorted(close))}?)" if close else ""
        raise ConfigError(f"config.{section}.{key} is not a known key{hint}")


def check_enums(config: mlc.ConfigDict) -> None:
  for dotted, choices in ENUMS.items():
    value = _get(config, dotted)
    if value is not None and value not in choices:
      raise ConfigError(f"config.{dotted}={value!r} is not one of {', '.join(choices)}")


FRAME_TASKS = ("none", "first", "last", "first_last", "keyframes", "retake", "forcing")


def parse_tasks(spec: str, key: str = "config.diffusion.frame_tasks"
                ) -> tuple[tuple[str, float], ...]:
  """'none:0.5,first:0.3,forcing:0.2' -> (('none', 0.5), ...); '' -> () (text-to-video only)."""
  out = []
  for part in (p.strip() for p in str(spec or "").split(",") if p.strip()):
    m = re.fullmatch(r"([a-z_]+)(?::([0-9.]+))?", part)
    if not m or m.group(1) not in FRAME_TASKS:
      raise ConfigError(f"{key}: {part!r} is not TASK[:WEIGHT] with TASK one of {', '.join(FRAME_TASKS)}")
    weight = float(m.group(2)) if m.group(2) else 1.0
    if not weight >= 0:
      raise ConfigError(f"{key}: weight of {m.group(1)!r} must be >= 0")
    out.append((m.group(1), weight))
  if out and not sum(w for _, w in out) > 0:
    raise ConfigError(f"{key}: the weights sum to 0")
  return tuple(out)


def check_frame_tasks(config: mlc.ConfigDict) -> None:
  """diffusion.frame_tasks parses, and trains with rectified flow on unpacked clips."""
  diff = config.get("diffusion")
  if diff is None or not diff.get("frame_tasks"):
    return
  parse_tasks(diff.frame_tasks)
  if diff.objective != "flow":
    raise ConfigError(f"config.diffusion.frame_tasks needs diffusion.objective='flow', not "
                      f"{diff.objective!r}")
  if not 0.0 <= float(diff.get("known_noise", 0.0)) < 1.0:
    raise ConfigError(f"config.diffusion.known_noise={diff.known_noise} must be in [0, 1)")


def check_interval(interval, key: str = "sample.guidance_interval") -> tuple[float, float]:
  """(lo, hi) with 0 <= lo < hi <= 1 (the t range of guidance), or a ConfigError naming the key."""
  try:
    lo, hi = (float(v) for v in interval)
  except (TypeError, ValueError):
    raise ConfigError(f"{key}={interval!r} must be two numbers (lo, hi) in [0, 1], e.g. "
                      f"--config.{key.removeprefix('config.')}='(0.3, 1.0)'") from None
  if not 0.0 <= lo < hi <= 1.0:
    raise ConfigError(f"{key}={interval!r} needs 0 <= lo < hi <= 1 (t = 1 is noise); "
                      "(0.0, 1.0) guides every step")
  return lo, hi


def parse_interval(text: str | None, flag: str = "--guidance_interval"
                   ) -> tuple[float, float] | None:
  """'LO,HI' as typed on a command line -> (LO, HI); None stays None. `check_interval` checks
  the range when the value reaches a config."""
  if text is None:
    return None
  try:
    lo, hi = (float(v) for v in text.split(","))
  except ValueError:
    raise ConfigError(f"{flag}={text!r} must be LO,HI, e.g. 0.3,1") from None
  return lo, hi


def _refuse_with_packing(config: mlc.ConfigDict, setting: str, off: str, what: str) -> None:
  """An option that needs each clip's latent grid, which packed rows do not keep."""
  data = config.get("data")
  if data is not None and int(data.get("pack_tokens", 0) or 0):
    raise ConfigError(f"config.{setting} {what}, which packed rows (data.pack_tokens > 0) do not "
                      f"keep: set --config.{off} or --config.data.pack_tokens=0")


def check_model(config: mlc.ConfigDict) -> None:
  model = config.get("model")
  if model is None:
    return
  width, heads = int(model.get("width", 0)), int(model.get("heads", 0))
  if width and heads and width % heads:
    raise ConfigError(f"config.model.heads={heads} does not divide model.width={width}")
  if model.attention_impl == "cudnn" and model.dtype != "bfloat16":
    raise ConfigError("config.model.attention_impl='cudnn' needs model.dtype='bfloat16' "
                      "(cuDNN flash attention runs in bf16/fp16 only)")
  if model.get("layout_prior", False) and not (model.get("layout_readout", False)
                                               and model.get("cond", "text") == "text"):
    raise ConfigError("config.model.layout_prior=True trains what model.layout_readout reads: "
                      "also set --config.model.layout_readout=True (text conditioning)")
  if model.get("out_conv", ""):
    try:
      parse_out_conv(model.out_conv)
    except ValueError as e:
      raise ConfigError(f"config.{e}") from None
    _refuse_with_packing(config, f"model.out_conv={model.out_conv!r}", "model.out_conv=''",
                         "convolves each clip's latent grid")
  if model.attention_impl in ("ring", "allgather") and config.mesh.context == 1:
    raise ConfigError(f"config.model.attention_impl={model.attention_impl!r} shards tokens over "
                      "the context axis; set mesh.context > 1 (or use attention_impl='xla')")
  diff, samp = config.get("diffusion"), config.get("sample")
  if diff is not None and diff.get("layout_prior_only", False):
    if not model.get("layout_prior", False):
      raise ConfigError("config.diffusion.layout_prior_only=True trains the layout prior alone: "
                        "set --config.model.layout_prior=True (and model.layout_readout=True)")
    optim = config.get("optim")
    if optim is not None and optim.weight_decay:
      raise ConfigError(f"config.diffusion.layout_prior_only=True leaves every weight but the "
                        f"prior's without a gradient, and optim.weight_decay="
                        f"{optim.weight_decay} would shrink them: set "
                        "--config.optim.weight_decay=0")
  object_weight = 0.0 if diff is None else diff.get("object_weight", 0.0)
  if isinstance(object_weight, bool) or not isinstance(object_weight, (int, float)) \
      or object_weight < 0:
    raise ConfigError(f"config.diffusion.object_weight={object_weight!r} must be a number >= 0 "
                      "(0 = the plain mean over latent pixels)")
  if object_weight:
    _refuse_with_packing(config, f"diffusion.object_weight={object_weight}",
                         "diffusion.object_weight=0", "weighs each clip's latent frames")
  if diff is not None and samp is not None:
    if samp.sampler not in SAMPLERS_FOR[diff.objective]:
      raise ConfigError(
          f"config.sample.sampler={samp.sampler!r} does not fit diffusion.objective="
          f"{diff.objective!r}; use {' or '.join(SAMPLERS_FOR[diff.objective])}")
    if isinstance(diff.shift, str) and diff.shift != "auto":
      try:
        float(diff.shift)
      except ValueError:
        raise ConfigError(f"config.diffusion.shift={diff.shift!r} must be 'auto' or a number")
    prior = samp.get("layout_prior_strength", 0.0)
    if isinstance(prior, bool) or not isinstance(prior, (int, float)) or not 0.0 <= prior <= 1.0:
      raise ConfigError(f"config.sample.layout_prior_strength={prior!r} must be in [0, 1] "
                        "(0 = start from pure noise)")
    if prior and not (model.get("layout_prior", False) and diff.objective == "flow"):
      raise ConfigError("config.sample.layout_prior_strength > 0 starts sampling from the layout "
                        "prior: it needs --config.model.layout_prior=True and "
                        "diffusion.objective='flow' (or set it to 0)")
    shift = samp.get("shift", "train")
    if str(shift) != "train":
      try:
        float(shift)
      except ValueError:
        raise ConfigError(f"config.sample.shift={shift!r} must be 'train' (the training shift) "
                          "or a number, e.g. --config.sample.shift=3.0") from None
    if "guidance_interval" in samp:
      check_interval(samp.guidance_interval, "config.sample.guidance_interval")
    for key, allow_none in (("base_shift", False), ("max_shift", True)):
      value = diff.get(key)
      if value is None and allow_none:
        continue
      if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        what = "None (no cap) or a number > 0" if allow_none else "a number > 0"
        raise ConfigError(f"config.diffusion.{key}={value!r} must be {what}")
  text = config.get("text")
  if text is not None and text.encoder == "t5" and not text.t5_path:
    raise ConfigError("config.text.encoder='t5' needs config.text.t5_path: a local directory "
                      "with config.json and model.safetensors (nothing is downloaded)")


def check_mesh(config: mlc.ConfigDict, num_devices: int | None = None,
               process_count: int = 1) -> tuple[int, int, int, int]:
  """Resolves -1 in the mesh and checks the batch splits over data × fsdp and processes."""
  m = config.mesh
  shape = [int(m.data), int(m.fsdp), int(m.tensor), int(m.context)]
  names = ("data", "fsdp", "tensor", "context")
  for n, s in zip(names, shape):
    if s == 0 or s < -1:
      raise ConfigError(f"config.mesh.{n}={s} must be a positive size or -1 (fill)")
  if shape.count(-1) > 1:
    raise ConfigError("config.mesh: only one axis may be -1 (fill with the remaining devices)")
  if num_devices is not None:
    known = math.prod(s for s in shape if s != -1)
    if num_devices % known:
      raise ConfigError(
          f"config.mesh {dict(zip(names, shape))} needs a multiple of {known} devices, "
          f"but {num_devices} are available; change the mesh sizes")
    if -1 in shape:
      shape[shape.index(-1)] = num_devices // known
    elif known != num_devices:
      raise ConfigError(
          f"config.mesh {dict(zip(names, shape))} uses {known} devices but {num_devices} are "
          f"available; set one axis to -1 to fill")
    batch_shards = shape[0] * shape[1]
    b = int(config.data.batch_size)
    if b % batch_shards:
      raise ConfigError(
          f"config.data.batch_size={b} is not divisible by mesh data×fsdp={batch_shards}; "
          f"use a multiple of {batch_shards}")
  if int(config.data.batch_size) % process_count:
    raise ConfigError(f"config.data.batch_size={config.data.batch_size} is not divisible by "
                      f"the {process_count} processes")
  return tuple(shape)


def check_optim(config: mlc.ConfigDict) -> None:
  o, t = config.get("optim"), config.get("train")
  if o is None or t is None:
    return
  if o.lr <= 0:
    raise ConfigError(f"config.optim.lr={o.lr} must be > 0")
  if o.get("name", "adamw") == "muon" and float(o.get("muon_lr", 0.0)) <= 0:
    raise ConfigError(f"config.optim.muon_lr={o.get('muon_lr')} must be > 0 with "
                      "optim.name='muon' (0.02 is the usual value)")
  if o.warmup_steps >= max(t.steps, 1) and t.steps > 1:
    raise ConfigError(f"config.optim.warmup_steps={o.warmup_steps} must be < train.steps="
                      f"{t.steps}")
  if not 0.0 <= o.ema_decay < 1.0:
    raise ConfigError(f"config.optim.ema_decay={o.ema_decay} must be in [0, 1)")


def check_eval(config: mlc.ConfigDict) -> None:
  t = config.get("train")
  n = int(t.get("eval_loss_num", 0)) if t is not None else 0
  if n < 0:
    raise ConfigError(f"config.train.eval_loss_num={n} must be >= 0 (0 = train.eval_num)")
  if n and config.get("task") != "t2v":
    raise ConfigError(f"config.train.eval_loss_num={n} sizes the text-to-video loss report; a "
                      f"{config.get('task')} run evaluates train.eval_num clips: set it to 0")


def check_frozen_encoder(config: mlc.ConfigDict) -> None:
  v = config.get("vae")
  if config.get("task") != "vae" or v is None or not v.get("freeze_encoder", False):
    return
  if not config.get("train", {}).get("init_from", ""):
    raise ConfigError("config.vae.freeze_encoder=True keeps the encoder of a trained VAE, but "
                      "config.train.init_from is empty: name that VAE's workdir or export "
                      "(--config.train.init_from=...), or set freeze_encoder=False")


def check_decoder_refining(config: mlc.ConfigDict) -> None:
  v = config.get("vae")
  if config.get("task") != "vae" or v is None or not v.get("refine_t2v", ""):
    return
  if not v.get("freeze_encoder", False):
    raise ConfigError("config.vae.refine_t2v trains a decoder for the latents that DiT was "
                      "trained on, so the encoder must stay as it is: set "
                      "--config.vae.freeze_encoder=True")
  if not 0.0 < float(v.refine_share) <= 1.0:
    raise ConfigError(f"config.vae.refine_share={v.refine_share} must be in (0, 1]: the share of "
                      "each batch decoded from the DiT's latents")
  strengths = tuple(v.refine_strengths)
  if not strengths or not all(0.0 < float(s) <= 1.0 for s in strengths):
    raise ConfigError(f"config.vae.refine_strengths={strengths} must be SDEdit noise levels in "
                      "(0, 1], e.g. (0.3, 0.45, 0.6, 0.75)")
  if int(v.refine_clips) < int(config.data.batch_size):
    raise ConfigError(f"config.vae.refine_clips={v.refine_clips} is fewer than one batch "
                      f"(config.data.batch_size={config.data.batch_size})")
  if not config.data.get("cache_dir", ""):
    raise ConfigError("config.vae.refine_t2v keeps its generated pairs in config.data.cache_dir, "
                      "which is empty: set --config.data.cache_dir=DIR")


def check_task(config: mlc.ConfigDict, training: bool = False) -> None:
  task = config.get("task")
  if task not in TASKS:
    raise ConfigError(f"config.task={task!r} is not one of {', '.join(TASKS)}")
  if training and task not in TRAINABLE_TASKS:
    raise ConfigError(
        f"config.task={task!r} has no trainer: configs/dit_paper.py (the DiT paper's "
        f"class-conditional image models) is for `sora-jax flops` only; train one of "
        f"{', '.join(TRAINABLE_TASKS)} (configs/vae.py, configs/t2v.py)")


def validate(config: mlc.ConfigDict, num_devices: int | None = None,
             process_count: int = 1, *, training: bool = False) -> mlc.ConfigDict:
  """Raises ConfigError for the first problem found; returns the config unchanged.

  `training=True` also refuses tasks without a trainer (class_image).
  """
  check_task(config, training)
  check_keys(config)
  check_enums(config)
  check_video_geometry(config)
  check_packing(config)
  check_frame_tasks(config)
  check_model(config)
  check_optim(config)
  check_eval(config)
  check_frozen_encoder(config)
  check_decoder_refining(config)
  check_mesh(config, num_devices, process_count)
  return config


# ------------------------------------------------------------------------ older run directories
def section_defaults(name: str, config: Mapping[str, Any] | None = None) -> mlc.ConfigDict:
  """Section `name` with its defaults; those that depend on another section follow `config`."""
  if name == "sample" and config is not None:
    diffusion = config.get("diffusion") or {}
    return sample_section(objective=diffusion.get("objective", "flow"))
  return SECTIONS[name]()


def top_level_defaults(task: str) -> dict[str, Any]:
  return {**S.TOP_LEVEL, "task": task, "rules": S.TASK_RULES.get(task, S.TOP_LEVEL["rules"])}


def missing_keys(config: Mapping[str, Any]) -> list[str]:
  """Schema keys a config of its task lacks ("section" for a whole section, "section.key")."""
  task = config.get("task")
  if task not in TASKS:
    raise ConfigError(f"config.task={task!r} is not one of {', '.join(TASKS)}")
  out = [key for key in TASK_TOP_LEVEL[task] if key not in config]
  for name in TASK_SECTIONS[task]:
    if name not in config:
      out.append(name)
    else:
      out += [f"{name}.{key}" for key in sorted(SCHEMA[name]) if key not in config[name]]
  return out


def complete(config: Mapping[str, Any]) -> mlc.ConfigDict:
  """An older run's config (a ConfigDict, or the dict of its config.json) in today's schema.

  Fills the keys (and whole sections) its task has that it lacks, with the defaults of the
  section builders, or, where the code behaved otherwise before a key existed, with the value
  of `BEFORE_KEY_EXISTED` (so an old run loads exactly as it trained). Drops `RETIRED` keys.
  Leaves every present value as it is and unknown keys for `validate` to name. Returns a new
  ConfigDict, locked if the input was.
  """
  locked = isinstance(config, mlc.ConfigDict) and config.is_locked
  raw = config.to_dict() if isinstance(config, mlc.ConfigDict) else copy.deepcopy(dict(config))
  task = raw.get("task")
  if task not in TASKS:
    raise ConfigError(f"config.task={task!r} is not one of {', '.join(TASKS)}; cannot complete "
                      "a config without its task")
  for dotted in RETIRED:
    section, key = dotted.split(".")
    if isinstance(raw.get(section), dict):
      raw[section].pop(key, None)
  for key, value in top_level_defaults(task).items():
    if key in TASK_TOP_LEVEL[task]:
      raw.setdefault(key, value)
  for name in TASK_SECTIONS[task]:
    defaults = section_defaults(name, raw).to_dict()
    if name not in raw:
      raw[name] = defaults
      continue
    for key, value in defaults.items():
      if key not in raw[name]:
        raw[name][key] = copy.deepcopy(BEFORE_KEY_EXISTED.get(f"{name}.{key}", value))
  out = mlc.ConfigDict(raw)
  if locked:
    out.lock()
  return out
