"""Run directories: the one place that knows a workdir.

A workdir holds `config.json` (the config as the run resolved it: latent scale, the VAE section
of its VAE run) and either orbax checkpoints (`checkpoints/<step>`) or an export
(`params.msgpack`, EMA weights only: what ships). From a workdir this module builds the pure
system of its kind and loads its params; inference, evaluation and the CLI go through here and
never through training code.

  system, params = runs.open_t2v("runs/t2v")       # T2VSystem + EMA params
  system, params = runs.open_vae("runs/vae")       # VAESystem + EMA params of the VAE
"""
from __future__ import annotations

import copy
import json
import logging
import os
from typing import Any, Mapping

import jax
import ml_collections as mlc
import numpy as np
from flax import serialization

from sora_jax import compile_cache
from sora_jax import config as config_lib
from sora_jax.parallel.rules import unbox
from sora_jax.systems.t2v import T2VSystem
from sora_jax.systems.vae import VAESystem

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
PARAMS_FILE = "params.msgpack"
RESOLVED_FILE = "resolved.json"
KINDS = ("vae", "t2v")


class RunError(ValueError):
  """A workdir that is not what the caller needs (missing, or another kind of run)."""


# ---- config ---------------------------------------------------------------------------------

def has_config(workdir: str) -> bool:
  return os.path.isfile(os.path.join(workdir, CONFIG_FILE))


def load_config(workdir: str, kind: str | None = None) -> mlc.ConfigDict:
  """The run's config, completed with schema defaults, relative run paths resolved.

  `kind` ('vae' | 't2v') refuses another kind of run with a message that says which it is.
  """
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.isfile(path):
    raise RunError(f"{workdir} has no {CONFIG_FILE}: is it a `sora-jax train` workdir?")
  with open(path) as f:
    config = config_lib.complete(mlc.ConfigDict(json.load(f)))
  if kind is not None and config.task != kind:
    raise RunError(f"{workdir} is a {config.task} run, not a {kind} run"
                   + (" (pass the text-to-video run's workdir; its VAE is found from it)"
                      if kind == "t2v" and config.task == "vae" else ""))
  if config.get("vae_workdir"):
    with config.unlocked():
      config.vae_workdir = resolve_run_path(config.vae_workdir, workdir)
  return config


def save_config(config, workdir: str) -> None:
  os.makedirs(workdir, exist_ok=True)
  tmp = os.path.join(workdir, CONFIG_FILE + ".tmp")
  with open(tmp, "w") as f:
    f.write(config.to_json(indent=2))
  os.replace(tmp, os.path.join(workdir, CONFIG_FILE))


def save_resolved(values: dict, workdir: str) -> None:
  """workdir/resolved.json: values training resolved at its start (latent scale, token count,
  timestep shift), for the record; the ones inference needs are in config.json too."""
  with open(os.path.join(workdir, RESOLVED_FILE), "w") as f:
    json.dump(values, f, indent=2)


def resolve_run_path(path: str, relative_to: str) -> str:
  """A run path in a config may be relative to the run that names it (shipped exports)."""
  if not path or os.path.isabs(path) or os.path.exists(path):
    return path
  candidate = os.path.normpath(os.path.join(relative_to, path))
  return candidate if os.path.exists(candidate) else path


def with_vae_of(config) -> mlc.ConfigDict:
  """A t2v config whose `vae` section is the one of its `vae_workdir` run (a copy)."""
  config = config.copy_and_resolve_references()
  if config.get("vae_workdir"):
    vae_cfg = load_config(config.vae_workdir, kind="vae").vae
    with config.unlocked():
      config.vae = vae_cfg
  return config


# ---- params ---------------------------------------------------------------------------------

def has_export(workdir: str) -> bool:
  return os.path.exists(os.path.join(workdir, PARAMS_FILE))


def _sha256(data: bytes) -> str:
  import hashlib
  return hashlib.sha256(data).hexdigest()


def read_export(workdir: str) -> bytes:
  """params.msgpack's bytes, checked against params.msgpack.sha256 (written with every export):
  a damaged file is refused instead of becoming a garbled model that writes black videos."""
  with open(os.path.join(workdir, PARAMS_FILE), "rb") as f:
    data = f.read()
  digest_file = os.path.join(workdir, PARAMS_FILE + ".sha256")
  if os.path.exists(digest_file):
    with open(digest_file) as f:
      want = f.read().split()[0]
    if _sha256(data) != want:
      raise RunError(f"{workdir}/{PARAMS_FILE} is damaged: its sha256 does not match "
                     f"{PARAMS_FILE}.sha256; restore the file (or re-export the run)")
  else:
    log.warning("%s/%s has no .sha256 beside it: its integrity cannot be checked", workdir,
                PARAMS_FILE)
  return data


def load_params(workdir: str, abstract: Any, key: str = "ema_params",
                step: int | None = None) -> Any:
  """Params for `abstract` (a tree of ShapeDtypeStructs) from an export or a checkpoint."""
  if has_export(workdir):
    try:
      raw = serialization.msgpack_restore(read_export(workdir))
    except RunError:
      raise
    except Exception as e:  # noqa: BLE001 - msgpack's errors say nothing about the file
      raise RunError(f"{workdir}/{PARAMS_FILE} cannot be read ({type(e).__name__}: {e}); the "
                     "file is damaged or not a sora_jax export") from None
    params = serialization.from_state_dict(abstract, raw)
    _check_shapes(abstract, params, workdir)
    return jax.tree.map(lambda a, x: np.asarray(x, a.dtype), abstract, params)
  from sora_jax import checkpoint as ckpt_lib
  ckpt = ckpt_lib.Checkpointer(workdir, async_save=False)
  try:
    if ckpt.latest_step() is None:
      raise RunError(f"{workdir} has neither {PARAMS_FILE} nor a checkpoint")
    return ckpt.restore_params(abstract, step=step, key=key)
  finally:
    ckpt.close()


def _check_shapes(abstract, params, workdir):
  for (path, a), x in zip(jax.tree_util.tree_flatten_with_path(abstract)[0],
                          jax.tree.leaves(params)):
    if tuple(a.shape) != tuple(np.shape(x)):
      raise RunError(f"{workdir}/{PARAMS_FILE}: {jax.tree_util.keystr(path)} has shape "
                     f"{np.shape(x)} but the config builds {a.shape}; config and weights differ")


def export(workdir: str, out_dir: str, abstract: Any, *, dtype=np.float32,
           config_updates: dict | None = None) -> str:
  """Writes out_dir/config.json (with `config_updates`) and out_dir/params.msgpack."""
  params = load_params(workdir, abstract)
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(workdir, CONFIG_FILE)) as f:
    cfg = json.load(f)
  for dotted, value in (config_updates or {}).items():
    node = cfg
    *parents, last = dotted.split(".")
    for p in parents:
      node = node[p]
    node[last] = value
  with open(os.path.join(out_dir, CONFIG_FILE), "w") as f:
    json.dump(cfg, f, indent=2)
  host = jax.tree.map(lambda x: np.asarray(x, dtype), params)
  write_export_params(out_dir, host)
  return out_dir


def write_export_params(out_dir: str, params: Any) -> str:
  """out_dir/params.msgpack and its sha256 (checked by every load)."""
  data = serialization.msgpack_serialize(serialization.to_state_dict(params))
  with open(os.path.join(out_dir, PARAMS_FILE), "wb") as f:
    f.write(data)
  with open(os.path.join(out_dir, PARAMS_FILE + ".sha256"), "w") as f:
    f.write(f"{_sha256(data)}  {PARAMS_FILE}\n")
  return os.path.join(out_dir, PARAMS_FILE)


# ---- systems --------------------------------------------------------------------------------

def abstract_vae_params(system: VAESystem) -> Any:
  return unbox(jax.eval_shape(system.init, jax.random.key(0), system.example_video(frames=1)),
               apply_constraint=False)


def abstract_t2v_params(system: T2VSystem) -> Any:
  return unbox(jax.eval_shape(system.init, jax.random.key(0), system.example_batch()),
               apply_constraint=False)


def open_vae(workdir: str, use_ema: bool = True, step: int | None = None
             ) -> tuple[VAESystem, Any]:
  """(VAESystem, params) of a VAE run; EMA weights unless use_ema=False."""
  system = VAESystem(load_config(workdir, kind="vae"))
  stored = load_params(workdir, {"vae": abstract_vae_params(system)}, step=step,
                       key="ema_params" if use_ema else "params")
  return system, stored["vae"]


def load_text_encoder(text_cfg) -> tuple[Any, Any, Any]:
  """(frozen encoder, its params, its tokenizer) for text.encoder='t5'; Nones otherwise."""
  if text_cfg.encoder != "t5":
    return None, None, None
  from sora_jax.data.tokenizer import tokenizer_for_text_config
  from sora_jax.models import t5
  tokenizer = tokenizer_for_text_config(text_cfg)   # refuses a T5 without its tokenizer
  encoder, params = t5.load_t5_encoder(text_cfg.t5_path)
  return encoder, params, tokenizer


def vae_of(config, *, abstract: bool = False) -> tuple[VAESystem, Any]:
  """(VAESystem, params) of a t2v config's VAE: the EMA weights of `vae_workdir`.

  abstract=True gives the params as ShapeDtypeStructs (no file read beyond configs). Without a
  vae_workdir a concrete VAE is untrained (plumbing only: tests, dry runs).
  """
  if config.get("vae_workdir"):
    config = with_vae_of(config)
    system = VAESystem(config)
    if abstract:
      return system, abstract_vae_params(system)
    return open_vae(config.vae_workdir)
  system = VAESystem(config)
  if abstract:
    return system, abstract_vae_params(system)
  log.warning("config.vae_workdir is empty: using an UNTRAINED VAE (plumbing only)")
  # Jitted on a one-frame clip (an eager init compiles hundreds of tiny ops), as a one-shot
  # program: the largest compile of a cold runlocal start otherwise.
  key, video = jax.random.key(int(config.seed) + 7), system.example_video(frames=1)
  return system, unbox(compile_cache.compile_once(system.init, key, video)(key, video))


def t2v_system(config, *, abstract: bool = False,
               vae: tuple[VAESystem, Any] | None = None) -> T2VSystem:
  """The T2VSystem of a (resolved) t2v config, its VAE from `vae_workdir` (`vae_of`).

  abstract=True builds it from shapes alone: enough for `sora-jax shardings`, init and
  compilation. `vae` = (VAESystem, params) already at hand skips loading them again.
  """
  vae, vae_params = vae if vae is not None else vae_of(config, abstract=abstract)
  if abstract and config.text.encoder == "t5":
    from sora_jax.data.tokenizer import ByteTokenizer
    from sora_jax.models import t5
    enc = t5.T5Encoder(t5.t5_config_from_json(os.path.join(config.text.t5_path, "config.json")))
    return T2VSystem(config, vae, vae_params, text_encoder=enc, tokenizer=ByteTokenizer())
  encoder, text_params, tokenizer = load_text_encoder(config.text)
  return T2VSystem(config, vae, vae_params, text_params=text_params, text_encoder=encoder,
                   tokenizer=tokenizer)


def open_t2v(workdir: str, use_ema: bool = True, step: int | None = None,
             sample: Mapping[str, Any] | None = None) -> tuple[T2VSystem, Any]:
  """(T2VSystem, params) of a text-to-video run; EMA weights unless use_ema=False. `sample`
  overrides keys of the run's config.sample (e.g. {'layout_prior_strength': 0.95}), checked."""
  config = load_config(workdir, kind="t2v")
  override_sample(config, sample)
  if float(config.diffusion.latent_scale) <= 0:
    raise RunError(f"{workdir}/config.json has diffusion.latent_scale=0: the run never "
                   "resolved it (it is estimated at the start of training)")
  system = t2v_system(config)
  params = load_params(workdir, abstract_t2v_params(system), step=step,
                       key="ema_params" if use_ema else "params")
  return system, params


def override_sample(config: mlc.ConfigDict, sample: Mapping[str, Any] | None) -> None:
  """Sampling settings are not part of what a run learned, so they may change after training;
  unknown keys and invalid values are refused like a training config's."""
  given = {k: v for k, v in (sample or {}).items() if v is not None}
  if not given:   # a run as saved is not re-checked: it was when it trained
    return
  for key in given:
    if key not in config.sample:
      raise config_lib.ConfigError(f"config.sample has no key {key!r}; it has "
                                   f"{', '.join(sorted(config.sample))}")
  trial = copy.deepcopy(config)   # a refused override leaves the config as it was
  with trial.unlocked():
    trial.sample.update(given)
  config_lib.check_model(trial)
  with config.unlocked():
    config.sample.update(given)


def run_kind(workdir: str) -> str:
  return load_config(workdir).task
