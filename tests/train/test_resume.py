"""Preemption and topology changes, with real `sora-jax train` subprocesses (8 fake CPU devices).

SIGKILL mid-run, inside a checkpoint save, leaves the previous checkpoint, and the restart ==
an uninterrupted run, loss for loss, bit for bit; SIGINT/SIGTERM save and stop; a non-finite
step halts; a damaged checkpoint is set aside; a checkpoint written on a
(8,1,1,1) mesh resumes on (2,2,2,1) and continues with the same losses to float tolerance.
The subprocesses share a persistent compilation cache, so only the first one compiles.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from sora_jax import checkpoint as ckpt_lib
from sora_jax.train import steps as steps_lib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = 12   # each checkpoint save costs ~1.3 s here and the runs save every 2 steps
CONFIG = "configs/t2v.py:runlocal,res=32,frames=9"


def _cache_dir(tmp_path_factory):
  base = tmp_path_factory.getbasetemp()
  # Under xdist each worker has its own basetemp; their parent is shared by the session.
  return str((base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "jax_cache")


def _env(cache, devices=8, **extra):
  env = dict(os.environ)
  env.update(XLA_FLAGS=f"{os.environ.get('SORA_JAX_TEST_XLA_FLAGS', '')} "
                       f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu",
             JAX_COMPILATION_CACHE_DIR=cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0", TF_CPP_MIN_LOG_LEVEL="3")
  env.pop(ckpt_lib.ENV_SLOW_SAVE, None)
  env.update(extra)
  return env


def _cmd(workdir, *flags):
  return [sys.executable, "-m", "sora_jax.cli", "train", f"--config={CONFIG}",
          f"--workdir={workdir}", "--config.data.batch_size=8", f"--config.train.steps={STEPS}",
          "--config.train.log_every=1", "--config.train.ckpt_every=2",
          "--config.train.sample_every=0", "--config.train.eval_every=0",
          "--config.train.async_checkpoint=False",
          # Fixed, so no run spends seconds (cold: 20) estimating it through the VAE encoder.
          "--config.diffusion.latent_scale=1.0", *flags]


def _run(cmd, env, timeout=300):
  p = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
  assert p.returncode == 0, f"{' '.join(cmd)} failed:\n{p.stdout[-3000:]}\n{p.stderr[-5000:]}"
  return p


def _rows(workdir):
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.endswith("\n")]


def _losses(rows):
  """Loss per step; a resumed run's rows overwrite the killed run's for the steps it redid."""
  out = {}
  for r in rows:
    out[r["step"]] = r["loss"]
  return [out[s] for s in sorted(out)]


def _committed(workdir):
  d = os.path.join(workdir, "checkpoints")
  return sorted(int(n) for n in os.listdir(d) if n.isdigit()) if os.path.isdir(d) else []


def _kill_when(proc, cond, what, timeout=300):
  t0 = time.time()
  while not cond():
    if proc.poll() is not None:
      out = proc.stdout.read() if proc.stdout else ""
      pytest.fail(f"the run ended (rc={proc.returncode}) before {what}:\n{out[-4000:]}")
    if time.time() - t0 > timeout:
      proc.kill()
      pytest.fail(f"timed out waiting for {what}")
    time.sleep(0.005)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL


def _assert_each_step_once(rows):
  steps = [r["step"] for r in rows]
  assert steps == sorted(set(steps)), f"metrics.jsonl repeats or reorders steps: {steps}"


def _signal_when(proc, cond, sig, what, timeout=300):
  t0 = time.time()
  while not cond():
    if proc.poll() is not None or time.time() - t0 > timeout:
      proc.kill()
      pytest.fail(f"the run ended or timed out before {what}:\n{proc.stdout.read()[-4000:]}")
    time.sleep(0.005)
  proc.send_signal(sig)
  out, _ = proc.communicate(timeout=timeout)
  return proc.returncode, out


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
  return _cache_dir(tmp_path_factory)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache):
  """An uninterrupted run on the default mesh (data=8): its workdir and loss per step."""
  workdir = str(tmp_path_factory.mktemp("reference"))
  _run(_cmd(workdir), _env(cache))
  losses = _losses(_rows(workdir))
  assert len(losses) == STEPS and len(set(losses)) > STEPS // 2
  return workdir, losses


def test_sigkill_inside_a_save_then_resume_is_identical(reference, tmp_path, cache):
  """SIGKILL mid-run, inside the save of step 6: checkpoint 4 stays the latest, the torn save is
  cleaned up, and the restarted run is the uninterrupted one, float for float. (One scenario
  for two: a kill between saves is this one without the torn directory.)"""
  workdir = str(tmp_path / "run")
  ckpts = os.path.join(workdir, "checkpoints")

  def saving_6():  # step 6's temporary directory exists: the save has started, not committed
    return os.path.isdir(ckpts) and any(n.startswith("6.") and "tmp" in n
                                        for n in os.listdir(ckpts))

  proc = subprocess.Popen(_cmd(workdir), env=_env(cache, **{ckpt_lib.ENV_SLOW_SAVE: "6:120"}),
                          cwd=REPO, text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT)
  _kill_when(proc, saving_6, "the save of step 6 to start")
  assert _committed(workdir) == [2, 4]
  killed = _rows(workdir)
  assert len(killed) < STEPS, "the kill came after the run had finished"
  _run(_cmd(workdir), _env(cache))
  rows = _rows(workdir)
  _assert_each_step_once(rows)                  # restored checkpoint 4; steps 5.. re-run once
  kept = [r for r in killed if r["step"] <= 4]
  assert rows[:len(kept)] == kept               # the rows before the checkpoint survive as-is
  assert not any("tmp" in n for n in os.listdir(ckpts))   # the torn save was cleaned up
  assert _losses(rows) == reference[1]          # exact, float for float


def test_checkpoint_from_data8_resumes_on_2x2x2_mesh(reference, tmp_path, cache):
  src, want = reference
  workdir = str(tmp_path / "run")
  shutil.copytree(src, workdir)
  kept = _committed(workdir)
  resume_from = kept[0]
  for step in kept[1:]:   # make the oldest kept checkpoint (saved on data=8) the latest
    shutil.rmtree(os.path.join(workdir, "checkpoints", str(step)))
  p = _run(_cmd(workdir, "--config.mesh.data=2", "--config.mesh.fsdp=2",
                "--config.mesh.tensor=2"), _env(cache))
  assert "'tensor': 2" in p.stdout
  rows = _rows(workdir)
  _assert_each_step_once(rows)
  resumed = [r for r in rows if r["step"] > resume_from]
  assert [r["step"] for r in resumed] == list(range(resume_from + 1, STEPS + 1))
  got = [r["loss"] for r in resumed]
  # The first loss is the restored params' on the new mesh: only summation order differs. Later
  # ones drift a little more (Adam amplifies rounding where gradients are ~0).
  assert got[0] == pytest.approx(want[resume_from], rel=5e-5)
  assert got == pytest.approx(want[resume_from:], rel=2e-4)


def test_dry_run_reports_memory_for_a_mesh_and_refuses_what_cannot_fit(tmp_path, cache):
  workdir = str(tmp_path / "dry")
  mesh = ["--config.mesh.data=2", "--config.mesh.fsdp=2", "--config.mesh.tensor=2"]
  p = _run(_cmd(workdir, "--dry_run", *mesh), _env(cache))
  facts = json.loads(p.stdout.strip().splitlines()[-1])
  assert facts["peak_bytes_estimate"] > 0 and facts["flops"] > 0 and facts["params"] > 0
  assert "mesh {'data': 2, 'fsdp': 2, 'tensor': 2, 'context': 1}" in p.stdout
  assert _committed(workdir) == [] and _rows(workdir) == []   # compiled, did not train
  limit_gb = facts["peak_bytes_estimate"] / 2**30 / 2
  p = subprocess.run(_cmd(workdir, "--dry_run", *mesh), cwd=REPO, capture_output=True, text=True,
                     env=_env(cache, SORA_JAX_DEVICE_MEMORY_GB=f"{limit_gb:.9f}"), timeout=300)
  assert p.returncode == 2 and "Traceback" not in p.stderr
  assert "per device" in p.stderr and "mesh.fsdp" in p.stderr


def test_ctrl_c_and_preemption_save_exit_cleanly_and_resume_identically(reference, tmp_path,
                                                                        cache):
  workdir = str(tmp_path / "run")

  def popen():
    return subprocess.Popen(_cmd(workdir), env=_env(cache), cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

  rc, out = _signal_when(popen(), lambda: len(_rows(workdir)) >= 3, signal.SIGINT, "step 3")
  assert rc == 130 and "Traceback" not in out and "KeyboardInterrupt" not in out, out[-3000:]
  assert "SIGINT: stopped after step" in out and "Run the same command to resume" in out
  stopped = max(_committed(workdir))
  assert stopped == _rows(workdir)[-1]["step"]      # saved at the step it stopped on
  rc, out = _signal_when(popen(), lambda: len(_rows(workdir)) >= stopped + 3, signal.SIGTERM,
                         "three more steps")
  assert rc == 0 and "SIGTERM: stopped after step" in out, out[-3000:]
  rows = _rows(workdir)
  assert max(_committed(workdir)) == rows[-1]["step"]   # saved at the step it stopped on
  _assert_each_step_once(rows)
  # The run resumed from the SIGINT save is the uninterrupted run, step for step, up to where
  # SIGTERM stopped it (resuming from a signal's save is the path just taken; not run again).
  assert _losses(rows) == reference[1][:len(rows)]


def test_nonfinite_step_halts_without_saving_and_the_checkpoint_resumes(reference, tmp_path,
                                                                        cache):
  workdir = str(tmp_path / "run")
  p = subprocess.run(_cmd(workdir, "--config.train.nonfinite=halt"), cwd=REPO, text=True,
                     capture_output=True, timeout=300,
                     env=_env(cache, **{steps_lib.ENV_INJECT_NAN: "5"}))   # done = step 6
  assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr[-3000:]
  assert "non-finite loss/gradients at step 6" in p.stderr and "--resume_step" in p.stderr
  assert _committed(workdir) == [2, 4]              # nothing saved from or after the bad step
  assert json.load(open(os.path.join(workdir, "nonfinite.json")))["step"] == 6
  _run(_cmd(workdir), _env(cache))                  # checkpoint 4 is finite: resumes exactly
  assert _losses(_rows(workdir)) == reference[1]


def test_damaged_latest_checkpoint_falls_back_and_resume_step_goes_back(reference, tmp_path,
                                                                        cache):
  src, want = reference
  workdir = str(tmp_path / "run")
  shutil.copytree(src, workdir)
  latest = max(_committed(workdir))
  files = [os.path.join(d, f) for d, _, fs in os.walk(os.path.join(workdir, "checkpoints",
                                                                    str(latest), "state"))
           for f in fs]
  for f in files:                                   # garble the latest step's state
    with open(f, "wb") as fh:
      fh.write(b"\x00garbage")
  p = _run(_cmd(workdir), _env(cache))
  assert f"checkpoint step {latest}" in p.stderr and "damaged" in p.stderr
  rows = _rows(workdir)
  _assert_each_step_once(rows)
  assert _losses(rows) == want
  assert os.path.isdir(os.path.join(workdir, "damaged_checkpoints", str(latest)))
  back = min(_committed(workdir))
  _run(_cmd(workdir, f"--resume_step={back}"), _env(cache))
  assert min(_committed(workdir)) <= back and _losses(_rows(workdir)) == want
  _assert_each_step_once(_rows(workdir))
