"""Config validation: every impossible combination fails here, naming the key and the fix,
before anything is traced or compiled.
"""
from __future__ import annotations

import math
from typing import Any

import ml_collections as mlc

# The keys each section may hold. A key outside this table is a typo or a stale config.
SCHEMA: dict[str, frozenset[str] | None] = {
    "task": None, "seed": None, "rules": None, "vae_workdir": None,
    "data": frozenset({
        "name", "source", "builder_config", "data_dir", "folder", "frames", "height", "width",
        "fps", "caption", "text_len", "batch_size", "split", "eval_split", "shuffle_seed",
        "num_workers", "num_epochs", "cache_dir", "cache_clips"}),
    "vae": frozenset({
        "temporal_compression", "spatial_compression", "latent_channels", "channels",
        "channel_mult", "num_res_blocks", "dtype", "param_dtype", "recon_loss", "kl_weight",
        "adv_weight", "adv_start_step", "disc_channels", "disc_layers", "perceptual_weight",
        "perceptual_path", "scaling_factor", "encode_chunk", "tile", "tile_overlap",
        "patch_size", "mid_attention", "shortcut"}),
    "model": frozenset({
        "variant", "patch", "width", "depth", "heads", "mlp", "mlp_ratio", "qk_norm", "pos",
        "remat_policy", "scan_layers", "attention_impl", "dtype", "param_dtype", "cond",
        "num_classes", "learn_sigma", "in_channels", "class_dropout"}),
    "text": frozenset({"encoder", "t5_path", "width", "depth", "heads", "max_len", "drop_prob"}),
    "diffusion": frozenset({
        "objective", "t_sampling", "logit_mean", "logit_std", "shift", "base_tokens",
        "beta_schedule", "num_train_timesteps", "latent_scale"}),
    "sample": frozenset({"sampler", "steps", "guidance_scale", "steps_per_chunk", "prompts"}),
    "optim": frozenset({
        "name", "muon_lr", "lr", "b1", "b2", "eps", "weight_decay", "warmup_steps", "schedule",
        "min_lr_ratio", "grad_clip", "ema_decay"}),
    "train": frozenset({
        "steps", "log_every", "ckpt_every", "sample_every", "keep_checkpoints",
        "async_checkpoint", "dry_run"}),
    "mesh": frozenset({"data", "fsdp", "tensor", "context", "distributed"}),
}

TASKS = ("vae", "t2v", "class_image")
ENUMS = {
    "data.name": ("shapes_world", "video_folder"),
    "data.source": ("procedural", "tfds"),
    "data.caption": ("short", "detailed", "mixed"),
    "vae.recon_loss": ("l1", "l2"),
    "vae.dtype": ("float32", "bfloat16"),
    "vae.param_dtype": ("float32", "bfloat16"),
    "model.mlp": ("swiglu", "gelu"),
    "model.pos": ("rope3d", "sincos"),
    "model.remat_policy": ("nothing_saveable", "dots_saveable", "none"),
    "model.attention_impl": ("xla", "cudnn", "ring", "allgather"),
    "model.dtype": ("float32", "bfloat16"),
    "model.param_dtype": ("float32", "bfloat16"),
    "text.encoder": ("bundled", "t5"),
    "diffusion.objective": ("flow", "eps", "v"),
    "diffusion.t_sampling": ("logit_normal", "uniform"),
    "diffusion.beta_schedule": ("linear", "cosine"),
    "sample.sampler": ("euler", "heun", "ddim"),
    "optim.schedule": ("cosine", "constant"),
    "optim.name": ("adamw", "muon"),
}
SAMPLERS_FOR = {"flow": ("euler", "heun"), "eps": ("ddim",), "v": ("ddim",)}


class ConfigError(ValueError):
  """A config value that cannot work; the message names the key and the fix."""


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


def check_video_geometry(config: mlc.ConfigDict) -> None:
  """Frames of the form 1 + tc*k; resolution divisible by the VAE; latent grid by the patch."""
  d, v = config.data, config.get("vae")
  for key in ("frames", "height", "width", "batch_size"):
    if int(d[key]) < 1:
      raise ConfigError(f"config.data.{key}={d[key]} must be a positive integer")
  if v is None:
    return
  tc, sc = int(v.temporal_compression), int(v.spatial_compression)
  if tc not in (1, 2, 4):
    raise ConfigError(f"config.vae.temporal_compression={tc} must be 1, 2 or 4")
  if sc not in (8, 16):
    raise ConfigError(f"config.vae.spatial_compression={sc} must be 8 or 16")
  if (d.frames - 1) % tc:
    ok = ", ".join(str(1 + tc * k) for k in range(6))
    raise ConfigError(
        f"config.data.frames={d.frames} is not 1 + {tc}k for vae.temporal_compression={tc} "
        f"(the first frame is encoded on its own); use one of {ok}, ...")
  for key in ("height", "width"):
    if d[key] % sc:
      lo, hi = d[key] // sc * sc, -(-d[key] // sc) * sc
      raise ConfigError(
          f"config.data.{key}={d[key]} is not divisible by vae.spatial_compression={sc}; "
          f"use {max(lo, sc)} or {hi}")
  levels, p = len(v.channel_mult), int(v.get("patch_size", 1))
  if p < 1 or sc % p:
    raise ConfigError(f"config.vae.patch_size={p} must divide vae.spatial_compression={sc}")
  need = max(int(math.log2(sc // p)), int(math.log2(tc))) + 1
  if levels != need:
    raise ConfigError(
        f"config.vae.channel_mult has {levels} levels but spatial_compression={sc} with "
        f"patch_size={p} and temporal_compression={tc} needs {need} (one per downsample plus "
        f"the input level)")
  if int(v.latent_channels) < 1:
    raise ConfigError(f"config.vae.latent_channels={v.latent_channels} must be ≥ 1")
  model = config.get("model")
  if model is not None and config.get("task") == "t2v":
    grid = (1 + (d.frames - 1) // tc, d.height // sc, d.width // sc)
    names = ("frames", "height", "width")
    for axis, (g, p, name) in enumerate(zip(grid, model.patch, names)):
      if g % p:
        raise ConfigError(
            f"config.model.patch={tuple(model.patch)} does not divide the latent grid {grid}: "
            f"latent {name} {g} is not a multiple of {p} (data.{name}="
            f"{d[name] if name != 'frames' else d.frames}); change model.patch or the data size")


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
  if model.attention_impl in ("ring", "allgather") and config.mesh.context == 1:
    raise ConfigError(f"config.model.attention_impl={model.attention_impl!r} shards tokens over "
                      "the context axis; set mesh.context > 1 (or use attention_impl='xla')")
  diff, samp = config.get("diffusion"), config.get("sample")
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


def validate(config: mlc.ConfigDict, num_devices: int | None = None,
             process_count: int = 1) -> mlc.ConfigDict:
  """Raises ConfigError for the first problem found; returns the config unchanged."""
  if config.get("task") not in TASKS:
    raise ConfigError(f"config.task={config.get('task')!r} is not one of {', '.join(TASKS)}")
  check_keys(config)
  check_enums(config)
  check_video_geometry(config)
  check_model(config)
  check_optim(config)
  check_mesh(config, num_devices, process_count)
  return config
