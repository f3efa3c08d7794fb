"""Malformed input at every command and at the pipeline API: a clear one-line message naming
the flag or file and a non-zero exit — never a traceback from inside JAX — and nothing written.

The CLI runs in-process (absl re-parses its flags per call) so the cases cost no interpreter
start-up; no case here reaches sampling.
"""
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from absl import flags

from sora_jax import cli, demo
from sora_jax.io import provenance

DEMO = os.path.join(demo.ASSETS, "t2v")


@pytest.fixture()
def keys(tmp_path, monkeypatch):
  cert, key = provenance.init_keys(str(tmp_path / "keys"))
  monkeypatch.setenv("SORA_JAX_C2PA_CERT", cert)
  monkeypatch.setenv("SORA_JAX_C2PA_KEY", key)
  return cert, key


def _main(args):
  flags.FLAGS.unparse_flags()          # each call starts from the flags' defaults
  try:
    cli.main(["sora-jax", *args])
  finally:
    flags.FLAGS.mark_as_parsed()


def sora(capsys, *args) -> tuple[int, str]:
  with pytest.raises(SystemExit) as e:
    _main(args)
    raise SystemExit(0)
  err = capsys.readouterr().err
  assert "Traceback" not in err, err
  return e.value.code, err


def _vae_run(tmp_path) -> str:
  from configs import vae as vae_config
  from sora_jax import runs
  wd = str(tmp_path / "vae_run")
  runs.save_config(vae_config.get_config("runlocal,res=32,frames=9"), wd)
  return wd


@pytest.mark.parametrize("flags,message", [
    (["--frames=0"], "--frames=0 must be a positive integer"),
    (["--frames=-3"], "--frames=-3 must be a positive integer"),
    (["--steps=0"], "--steps=0 must be a positive integer"),
    (["--height=0"], "--height=0 must be a positive integer"),
    (["--frames=16"], "--frames=16 is not 1 + 4k"),
    (["--out=video.png"], "is an image format but 17 frames"),
    (["--out=video.xyz"], "unknown format '.xyz'"),
    (["--prompt=" + "a red circle " * 2000], "needs 6002 tokens"),   # 3 words each + bos, eos
    (["--prompt=   "], "only whitespace"),
    (["--frames=4097", "--height=1024", "--width=1024"], "at most --frames"),
    (["--prior_strength=1.5"], "layout_prior_strength=1.5 must be in [0, 1]"),
])
def test_sample_refuses_bad_flags_before_sampling(capsys, tmp_path, keys, flags, message,
                                                   monkeypatch):
  monkeypatch.setenv("SORA_JAX_DEVICE_MEMORY_GB", "4")
  out = str(tmp_path / "v.mp4")
  code, err = sora(capsys, "sample", f"--workdir={DEMO}", f"--out={out}", *flags)
  assert code == 2 and message in err, err
  assert not any(p.name.startswith(("v.", ".v")) for p in tmp_path.iterdir())


def test_output_paths_are_checked_first(capsys, tmp_path, keys):
  existing = tmp_path / "old.mp4"
  existing.write_bytes(b"precious")
  code, err = sora(capsys, "sample", f"--workdir={DEMO}", f"--out={existing}")
  assert code == 2 and "exists; pass --overwrite" in err and existing.read_bytes() == b"precious"
  code, err = sora(capsys, "sample", f"--workdir={DEMO}", f"--out={tmp_path}")
  assert code == 2 and "is a directory" in err
  (tmp_path / "file").write_text("")
  code, err = sora(capsys, "sample", f"--workdir={DEMO}", f"--out={tmp_path / 'file' / 'v.mp4'}")
  assert code == 2 and "cannot write" in err


def test_non_utf8_prompt_and_refused_prompt(capsys, tmp_path, keys):
  bad = os.fsdecode(b"a red caf\xe9 circle")      # what argv holds for invalid UTF-8 bytes
  code, err = sora(capsys, "sample", f"--workdir={DEMO}", f"--out={tmp_path / 'v.mp4'}",
                   f"--prompt={bad}")
  assert code == 2 and "not valid UTF-8" in err
  code, err = sora(capsys, "sample", f"--workdir={DEMO}", f"--out={tmp_path / 'v.mp4'}",
                   "--prompt=a graphic b.e.h.e.a.d.i.n.g video")
  assert code == 3 and "graphic_violence" in err or "refused" in err.lower(), err


def test_no_signing_key_is_a_clear_error(capsys, tmp_path, monkeypatch):
  monkeypatch.setenv("HOME", str(tmp_path))
  monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
  monkeypatch.delenv("SORA_JAX_C2PA_CERT", raising=False)
  monkeypatch.delenv("SORA_JAX_C2PA_KEY", raising=False)
  code, err = sora(capsys, "sample", f"--workdir={DEMO}", f"--out={tmp_path / 'v.mp4'}")
  assert code == 2 and "sora-jax keys init" in err and "--unsigned" in err


def test_wrong_kind_of_workdir_is_named(capsys, tmp_path, keys):
  vae = _vae_run(tmp_path)
  code, err = sora(capsys, "sample", f"--workdir={vae}", f"--out={tmp_path / 'v.mp4'}")
  assert code == 2 and "is a vae run, not a t2v run" in err
  code, err = sora(capsys, "eval", "vae", f"--workdir={DEMO}")
  assert code == 2 and "is a t2v run, not a vae run" in err
  code, err = sora(capsys, "eval", "shots", f"--workdir={vae}")
  assert code == 2 and "is a vae run, not a t2v run" in err
  code, err = sora(capsys, "sample", f"--workdir={tmp_path / 'missing'}")
  assert code == 2 and "no config.json" in err


def test_train_config_errors_are_one_line(tmp_path):
  # A subprocess: config overrides (--config.x.y) are flags absl defines while parsing --config.
  def train(*args):
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=os.environ["SORA_JAX_TEST_XLA_FLAGS"])
    return subprocess.run([sys.executable, "-m", "sora_jax.cli", "train", *args], env=env,
                          capture_output=True, text=True, timeout=300)
  p = train("--config=configs/t2v.py:runlocal", "--config.data.frames=16",
            f"--workdir={tmp_path / 'w'}")
  assert p.returncode == 2 and "config.data.frames=16 is not 1 + 4k" in p.stderr
  assert len(p.stderr.strip().splitlines()) == 1, p.stderr
  assert not (tmp_path / "w").exists()
  p = train("--config=configs/t2v.py:runlocal", f"--workdir={_vae_run(tmp_path)}")
  assert p.returncode == 2 and "holds another vae run" in p.stderr and "Traceback" not in p.stderr


def test_demo_refuses_what_it_cannot_honour(capsys, tmp_path, keys):
  code, err = sora(capsys, "demo", "--frames=0", f"--out={tmp_path / 'd.mp4'}")
  assert code == 2 and "--frames=0" in err
  code, err = sora(capsys, "demo", "--steps=-1", f"--out={tmp_path / 'd.mp4'}")
  assert code == 2 and "--steps=-1" in err
  code, err = sora(capsys, "demo", "--recipe=fast", f"--out={tmp_path / 'd.mp4'}")
  assert code != 0 and "add --train" in err and not (tmp_path / "d.mp4").exists()


def test_keys_and_verify_errors(capsys, tmp_path, keys):
  code, err = sora(capsys, "keys", "init", f"--keys_dir={pathlib.Path(keys[0]).parent}")
  assert code == 2 and "exist" in err
  code, err = sora(capsys, "verify", str(tmp_path / "none.mp4"))
  assert code != 0 and "no such file" in err
  from sora_jax.io import video as video_io
  plain = str(tmp_path / "plain.mp4")
  video_io.write_video(plain, np.zeros((5, 32, 32, 3), np.uint8) + 80)
  with pytest.raises(SystemExit) as e:
    _main(["verify", plain])
  assert e.value.code == 1 and '"valid": false' in capsys.readouterr().out


def test_pipeline_api_refuses_bad_input(t2v_tiny):
  from sora_jax import config as config_lib, safety
  from sora_jax.data.prompts import PromptError
  with pytest.raises(config_lib.ConfigError, match="--frames=0"):
    t2v_tiny("a red circle", num_frames=0)
  with pytest.raises(config_lib.ConfigError, match="--steps=2.5"):
    t2v_tiny("a red circle", num_steps=2.5)
  with pytest.raises(PromptError, match="not valid UTF-8"):
    t2v_tiny(os.fsdecode(b"a red \xff circle"))
  with pytest.raises(PromptError, match="prompt must be text"):
    t2v_tiny(42)
  with pytest.raises(safety.PromptRefused):
    t2v_tiny("child porn")
  with pytest.raises(config_lib.ConfigError, match="--guidance"):
    t2v_tiny("a red circle", guidance_scale=float("nan"))
