r"""sora-jax: train | sample | eval | data | flops | shardings | demo.

  sora-jax train --config=configs/vae.py:res=64,frames=17 --workdir=runs/vae
  sora-jax train --config=configs/t2v.py:variant=S --config.vae_workdir=runs/vae --workdir=runs/t2v
  sora-jax sample --workdir=runs/t2v --prompt "a red circle bounces to the right" --out v.mp4
  sora-jax eval vae --workdir=runs/vae --split=test --out=metrics.json
  sora-jax eval shots --workdir=runs/t2v --num=16     # two-shot prompts: cut, subject kept
  sora-jax data preview --config=configs/demo.py --out preview.mp4
  sora-jax flops --config=configs/dit_paper.py:variant=XL/2
  sora-jax shardings --config=configs/t2v.py:variant=B

Multi-host: start one process per host with the same command and, in its environment,
JAX_COORDINATOR_ADDRESS=host0:port JAX_NUM_PROCESSES=N JAX_PROCESS_ID=i (on a TPU pod or a
SLURM/GPU cluster, --config.mesh.distributed=True instead: jax finds these by itself). The mesh
spans all processes' devices. Two processes on one machine (CPU, gloo collectives):

  for i in 0 1; do XLA_FLAGS=--xla_force_host_platform_device_count=4 \
    JAX_COORDINATOR_ADDRESS=127.0.0.1:12355 JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=$i \
    sora-jax train --config=configs/t2v.py:runlocal,res=32,frames=9 --workdir=runs/mh & done; wait

Each process reads only its shard of every batch (the global batches are those of one process);
only process 0 writes logs, videos and the console line; checkpoints resume on any process count
and mesh. `--dry_run` compiles for the mesh and prints per-device memory and FLOPs; a step that
exceeds device memory (or $SORA_JAX_DEVICE_MEMORY_GB) fails before step 1.

train, sample, eval and demo keep compiled programs in ~/.cache/sora_jax/xla, so a second start
skips most compiling: --compile_cache=DIR or =off, or $SORA_JAX_COMPILE_CACHE, to change it.
"""
from __future__ import annotations

import json
import logging
import os
import sys

from absl import app, flags
from ml_collections import config_flags

from sora_jax import config_sections

COMMANDS = ("train", "sample", "eval", "data", "flops", "shardings", "demo", "keys", "verify")

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file[:args].",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, metrics, videos).")
_MAX_STEPS = flags.DEFINE_integer("max_steps", None, "Stop after this many steps in this call.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Compile for the mesh, print memory, don't train.")
_PROMPT = flags.DEFINE_string("prompt", "a red circle bounces to the right", "Text prompt.")
_FRAMES = flags.DEFINE_integer("frames", None, "Frames to generate (default: training frames).")
_HEIGHT = flags.DEFINE_integer("height", None, "Height in pixels (default: training height).")
_WIDTH = flags.DEFINE_integer("width", None, "Width in pixels (default: training width).")
_ASPECT = flags.DEFINE_string("aspect", None, "sample/demo: aspect ratio WIDTH:HEIGHT (16:9, 9:16, "
                              "1:1, 4:3) with --height or --width (default: the training short side).")
_SECONDS = flags.DEFINE_float("seconds", None, "sample/demo: duration; frames = the nearest the "
                              "VAE represents at the model's fps (instead of --frames).")
_IMAGE = flags.DEFINE_string("image", None, "sample/demo: image-to-video from this image.")
_VIDEO = flags.DEFINE_string("video", None, "sample/demo: an input video for --extend/--retake.")
_EXTEND = flags.DEFINE_enum("extend", None, ["forward", "backward"],
                            "sample/demo: extend --video forwards or backwards in time.")
_RETAKE = flags.DEFINE_string("retake", None, "sample/demo: regenerate START:END (seconds) of "
                              "--video under the prompt.")
_LOOP = flags.DEFINE_bool("loop", False, "sample/demo: a seamless loop.")
_WINDOWS = flags.DEFINE_bool("windows", False, "sample/demo: generate in overlapping windows of "
                             "the training length (any --seconds, flat memory).")
_OVERLAP = flags.DEFINE_integer("overlap", None, "sample --windows / eval long: latent frames "
                                "each window shares with the one before (default 1).")
_EXTEND_GUIDANCE = flags.DEFINE_float("extend_guidance", None, "sample --windows / eval long: "
                                       "CFG scale of the windows after the first (default: "
                                       "config.sample.extend_guidance_scale).")
_CONNECT = flags.DEFINE_string("connect", None, "sample/demo: A,B - begin with video A, end "
                               "with video B, a generated transition between.")
_KEYFRAMES = flags.DEFINE_string("keyframes", None, "sample/demo: SECONDS:IMAGE,... frames the "
                                 "video passes through.")
_EDIT = flags.DEFINE_string("edit", None, "sample/demo: edit this video under the prompt.")
_STRENGTH = flags.DEFINE_float("strength", None, "--edit: 0 keeps the video, 1 ignores it "
                               "(default 0.6).")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
_STEPS = flags.DEFINE_integer("steps", None, "Sampling steps (default: config.sample.steps).")
_GUIDANCE = flags.DEFINE_float("guidance", None, "CFG scale (default: config.sample).")
_PRIOR_STRENGTH = flags.DEFINE_float(
    "prior_strength", None, "sample / eval t2v: start sampling from the run's layout prior "
    "noised to this t (config.sample.layout_prior_strength; 0 = pure noise).")
_GUIDANCE_INTERVAL = flags.DEFINE_string(
    "guidance_interval", None, "sample / eval t2v: LO,HI - guide only where LO <= t <= HI "
    "(t = 1 is noise; config.sample.guidance_interval; 0,1 = every step).")
_OUT = flags.DEFINE_string("out", None, "Output file.")
_SPLIT = flags.DEFINE_string("split", "test", "Dataset split for eval.")
_NUM = flags.DEFINE_integer("num", 32, "Number of clips/videos for eval.")
_FVD_WEIGHTS = flags.DEFINE_string("fvd_weights", None, "eval t2v: a local I3D checkpoint "
                                   "(.npz/.safetensors, pytorch-i3d names; models/i3d.py): "
                                   "adds FVD against the held-out clips.")
_FOLDER = flags.DEFINE_string("folder", None, "A directory of real videos (video_folder).")
_WORLD = flags.DEFINE_enum("world", None, list(config_sections.WORLDS),
                           "eval vae / t2v: clips (and prompts) of this world instead of the "
                           "run's; e.g. --world=large scores a '_shots' run on one-shot prompts.")
_NUM_CLIPS = flags.DEFINE_integer("num_clips", 4, "Clips in the data preview grid.")
_TRAIN = flags.DEFINE_bool("train", False, "demo: train configs/demo.py's recipe from scratch into "
                           "--workdir (default workdirs/demo; ~5 h on 2 cores), sample its export.")
_RECIPE = flags.DEFINE_enum("recipe", "full", ["full", "fast"], "demo --train: configs/demo.py's "
                            "recipe: full (the shipped model) or fast (2 hours; into "
                            "workdirs/demo_fast by default).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "sample/demo: replace an existing --out; "
                               "train: delete another run found in --workdir and start afresh.")
_RESUME_STEP = flags.DEFINE_integer("resume_step", None, "train: resume from this checkpoint "
                                    "(later ones are deleted) instead of the latest.")
_UNSIGNED = flags.DEFINE_bool("unsigned", False, "Write without C2PA credentials (no key needed).")
_NO_PROMPT_IN_MANIFEST = flags.DEFINE_bool("no_prompt_in_manifest", False,
                                           "Leave the prompt out of the C2PA manifest.")
_SAFETY_POLICY = flags.DEFINE_string("safety_policy", "", "Prompt classifier: '' (the bundled "
                                     "policy), a policy .json, or module:attr.")
_FRAME_HOOK = flags.DEFINE_multi_string("frame_hook", [], "module:attr of a frame hook run on "
                                        "decoded frames before writing (repeatable).")
_LONG_PROMPT = flags.DEFINE_enum("long_prompt", "error", ["error", "warn"],
                                 "A prompt longer than the text encoder takes: error or cut.")
_KEYS_DIR = flags.DEFINE_string("keys_dir", None, "keys init: where to write the test key.")
_TRUST = flags.DEFINE_string("trust", None, "verify: a certificate to trust (PEM).")
_COMPILE_CACHE = flags.DEFINE_string(
    "compile_cache", None, "Persistent XLA compilation cache of train/sample/eval/demo: a "
    "directory, or 'off' (default: jax's own JAX_COMPILATION_CACHE_DIR if set, else "
    "$SORA_JAX_COMPILE_CACHE, else ~/.cache/sora_jax/xla). See sora_jax/compile_cache.py.")


USER_ERRORS: tuple[type, ...] = ()


def _require(flag, name: str):
  if flag.value is None:
    raise app.UsageError(f"--{name} is required for this command")
  return flag.value


def cmd_train(argv):
  from sora_jax.train import loop
  config = _require(_CONFIG, "config")
  if _DRY_RUN.value:
    with config.unlocked():
      config.train.dry_run = True
  workdir = _WORKDIR.value or os.path.join("workdirs", config.task)
  result = loop.train(config, workdir, max_steps=_MAX_STEPS.value, resume_step=_RESUME_STEP.value,
                      overwrite=_OVERWRITE.value)
  print(json.dumps({k: v for k, v in result.items() if isinstance(v, (int, float))}))


def _sample_request() -> dict:
  """The sampling flags as a sample_job request (validated there, before any work)."""
  return dict(prompt=_PROMPT.value, out=_OUT.value or "video.mp4", num_frames=_FRAMES.value,
              height=_HEIGHT.value, width=_WIDTH.value, num_steps=_STEPS.value,
              guidance_scale=_GUIDANCE.value, seed=_SEED.value, overwrite=_OVERWRITE.value,
              unsigned=_UNSIGNED.value, prompt_in_manifest=not _NO_PROMPT_IN_MANIFEST.value,
              safety_policy=_SAFETY_POLICY.value, frame_hooks=tuple(_FRAME_HOOK.value),
              on_long=_LONG_PROMPT.value, aspect=_ASPECT.value, seconds=_SECONDS.value,
              image=_IMAGE.value, video=_VIDEO.value, extend=_EXTEND.value,
              retake=_RETAKE.value, loop=_LOOP.value, connect=_CONNECT.value,
              keyframes=_KEYFRAMES.value, edit=_EDIT.value, strength=_STRENGTH.value,
              windows=_WINDOWS.value, overlap=_OVERLAP.value,
              extend_guidance=_EXTEND_GUIDANCE.value)


def _sample_overrides() -> dict:
  return {"layout_prior_strength": _PRIOR_STRENGTH.value,
          "guidance_interval": _guidance_interval()}


def _guidance_interval() -> tuple[float, float] | None:
  from sora_jax import config as config_lib
  return config_lib.parse_interval(_GUIDANCE_INTERVAL.value, "--guidance_interval")


def cmd_sample(argv):
  from sora_jax import sample_job
  workdir = _require(_WORKDIR, "workdir")
  report = sample_job.run_from_workdir(workdir, **_sample_request(), sample=_sample_overrides())
  print(f"wrote {report['path']}")


def cmd_eval(argv):
  what = argv[1] if len(argv) > 1 else None
  workdir = _require(_WORKDIR, "workdir")
  if what == "vae":
    from sora_jax.eval import vae_eval
    result = vae_eval.evaluate_workdir(workdir, split=_SPLIT.value, num_clips=_NUM.value,
                                       folder=_FOLDER.value, frames=_FRAMES.value,
                                       height=_HEIGHT.value, width=_WIDTH.value,
                                       world=_WORLD.value)
  elif what == "t2v":
    from sora_jax.eval import t2v_eval
    size = dict(num_frames=_FRAMES.value, height=_HEIGHT.value, width=_WIDTH.value,
                aspect=_ASPECT.value, seconds=_SECONDS.value)
    result = t2v_eval.evaluate_workdir(workdir, split=_SPLIT.value, num_videos=_NUM.value,
                                       seed=_SEED.value, size=size,
                                       fvd_weights=_FVD_WEIGHTS.value, world=_WORLD.value,
                                       sample=_sample_overrides())
  elif what == "long":
    from sora_jax.eval import t2v_eval
    result = t2v_eval.evaluate_long_workdir(
        workdir, seconds=_SECONDS.value or 60.0, split=_SPLIT.value,
        num_videos=_NUM.value if _NUM.present else 2,
        prompt=_PROMPT.value if _PROMPT.present else None, seed=_SEED.value,
        num_steps=_STEPS.value, guidance_scale=_GUIDANCE.value,
        extend_guidance=_EXTEND_GUIDANCE.value,
        overlap=1 if _OVERLAP.value is None else _OVERLAP.value)
  elif what == "shots":
    from sora_jax.eval import shots
    result = shots.evaluate_workdir(workdir, num_videos=_NUM.value if _NUM.present else 16,
                                    split=_SPLIT.value, seed=_SEED.value)
  elif what == "occlusion":
    from sora_jax.eval import occlusion
    result = occlusion.evaluate_workdir(workdir, num_videos=_NUM.value, split=_SPLIT.value,
                                        seed=_SEED.value, world=_WORLD.value,
                                        sample=_sample_overrides())
  else:
    raise app.UsageError("usage: sora-jax eval vae|t2v|long|shots|occlusion --workdir=W "
                         "[--split=test] [--world=full] "
                         "[--seconds=60] [--out=F]")
  text = json.dumps(result, indent=2)
  print(text)
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      f.write(text + "\n")


def cmd_data(argv):
  what = argv[1] if len(argv) > 1 else None
  config = _require(_CONFIG, "config")
  if what == "preview":
    from sora_jax.data import preview
    out = _OUT.value or "preview.mp4"
    preview.write_preview(config.data, out, num_clips=_NUM_CLIPS.value, seed=_SEED.value)
    print(f"wrote {out}")
  elif what == "prepare":
    from sora_jax.data import builders
    builder = builders.prepare(config.data)
    print(builder.info)
  else:
    raise app.UsageError("usage: sora-jax data preview|prepare --config=F [--out=F]")


def cmd_flops(argv):
  from sora_jax.eval import flops
  config = _require(_CONFIG, "config")
  rows = flops.flops_report(config)
  keys = list(rows[0].keys())
  print(" | ".join(keys))
  for r in rows:
    print(" | ".join(f"{r[k]:,.2f}" if isinstance(r[k], float) else str(r[k]) for k in keys))


def cmd_shardings(argv):
  from sora_jax.train import inspect as shard_inspect
  config = _require(_CONFIG, "config")
  print(shard_inspect.describe_config(config))


def cmd_demo(argv):
  from sora_jax import demo
  request = _sample_request()
  request["out"] = _OUT.value or "outputs/demo.mp4"
  if _RECIPE.present and not _TRAIN.value:
    raise app.UsageError("--recipe picks what `demo --train` trains; add --train, or sample an "
                         "earlier run with --workdir")
  report = demo.run(workdir=_WORKDIR.value, train=_TRAIN.value, recipe=_RECIPE.value, **request)
  print(f"wrote {report['path']}")


def cmd_keys(argv):
  what = argv[1] if len(argv) > 1 else None
  if what != "init":
    raise app.UsageError("usage: sora-jax keys init [--keys_dir=D] [--overwrite]")
  from sora_jax.io import provenance
  cert, key = provenance.init_keys(_KEYS_DIR.value, overwrite=_OVERWRITE.value)
  print(f"wrote a local ES256 test certificate {cert} and key {key}")


def cmd_verify(argv):
  if len(argv) < 2:
    raise app.UsageError("usage: sora-jax verify FILE [--trust=CERT]")
  from sora_jax.io import outputs, provenance, watermark
  path = argv[1]
  if not os.path.isfile(path):
    raise app.UsageError(f"{path}: no such file")
  report = provenance.verify(path, trust_anchors=_TRUST.value)
  try:
    payload, confidence, _ = watermark.extract(outputs.read_media(path))
    report["watermark"] = {"payload": f"{payload:#x}", "confidence": round(float(confidence), 4)}
  except Exception as e:  # noqa: BLE001 - an unreadable file still gets its C2PA verdict
    report["watermark"] = {"error": str(e)}
  print(json.dumps(report, indent=2, default=str))
  if not report["valid"]:
    sys.exit(1)


def _user_errors() -> tuple[type, ...]:
  from sora_jax import config as config_lib, runs, safety
  from sora_jax.data.prompts import PromptError
  from sora_jax.io.outputs import OutputError
  from sora_jax.train.guard import NonFiniteError
  from sora_jax.train.setup import WorkdirConflict
  return (config_lib.ConfigError, runs.RunError, PromptError, OutputError, WorkdirConflict,
          safety.PromptRefused, NonFiniteError, MemoryError, FloatingPointError,
          FileNotFoundError, FileExistsError, ValueError)


def _exit_code(e: BaseException) -> int:
  from sora_jax import safety
  return safety.EXIT_REFUSED if isinstance(e, safety.PromptRefused) else 2


def _dispatch(argv):
  global USER_ERRORS
  USER_ERRORS = _user_errors()
  # Library chatter (backend probing, orbax internals) would bury the progress line.
  for name in ("absl", "jax", "orbax", "grain", "tensorflow_datasets"):
    logging.getLogger(name).setLevel(logging.WARNING)
  import jax
  jax.config.update("jax_threefry_partitionable", True)
  command = argv[1]
  if command in ("train", "sample", "eval", "demo"):  # the commands that compile programs
    from sora_jax import compile_cache
    compile_cache.enable(_COMPILE_CACHE.value)
  rest = [argv[0]] + argv[2:]
  commands = {"train": cmd_train, "sample": cmd_sample, "eval": cmd_eval, "data": cmd_data,
              "flops": cmd_flops, "shardings": cmd_shardings, "demo": cmd_demo,
              "keys": cmd_keys, "verify": cmd_verify}
  try:
    commands[command](rest)
  except USER_ERRORS as e:  # the user's words, one line, no traceback
    if os.environ.get("SORA_JAX_DEBUG"):
      raise
    print(f"sora-jax {command}: error: {e}", file=sys.stderr)
    sys.exit(_exit_code(e))


def main(argv=None):
  argv = list(sys.argv if argv is None else argv)
  if len(argv) < 2 or argv[1] not in COMMANDS:
    print(__doc__)
    print(f"commands: {', '.join(COMMANDS)}")
    sys.exit(0 if len(argv) >= 2 and argv[1] in ("-h", "--help") else 2)
  # absl parses flags after the command word; positional words (e.g. `eval vae`) pass through.
  app.run(lambda a: _dispatch([argv[0], argv[1]] + a[1:]), argv=[argv[0]] + argv[2:])


if __name__ == "__main__":
  main()
