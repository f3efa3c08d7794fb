"""The user's path through the CLI, on tiny configs: train a VAE, evaluate it, train a
text-to-video DiT on its latents, sample a video from a prompt, preview the data."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from sora_jax.io import video as video_io
from sora_jax.models import perceptual

# One device, compiled like the rest of the suite (conftest: SORA_JAX_TEST_XLA_FLAGS).
ENV = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=os.environ["SORA_JAX_TEST_XLA_FLAGS"])


def sora(*args, timeout=600):
  cmd = [sys.executable, "-m", "sora_jax.cli", *args]
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=ENV)
  assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
  return proc.stdout


def _tiny_perceptual_weights():
  rng = np.random.default_rng(1)
  k = lambda cin, cout: rng.normal(0, 0.5, (3, 3, cin, cout)).astype(np.float32)  # noqa: E731
  return {"stage0.conv0.kernel": k(3, 4), "stage0.conv0.bias": np.zeros(4, np.float32),
          "lin0": np.abs(rng.normal(size=4)).astype(np.float32)}


@pytest.fixture(scope="module", autouse=True)
def signing_key(tmp_path_factory):
  """A local test key for every output of these commands (what `sora-jax keys init` makes)."""
  from sora_jax.io import provenance
  cert, key = provenance.init_keys(str(tmp_path_factory.mktemp("keys")))
  ENV.update(SORA_JAX_C2PA_CERT=cert, SORA_JAX_C2PA_KEY=key)
  return cert, key


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  root = tmp_path_factory.mktemp("runs")
  vae_dir, t2v_dir = str(root / "vae"), str(root / "t2v")
  # The VAE trains with a critic and a perceptual loss whose weights are deleted afterwards:
  # sampling must build neither (they belong to training).
  lpips = str(root / "lpips.npz")
  perceptual.save_perceptual(lpips, _tiny_perceptual_weights())
  sora("train", "--config=configs/vae.py:runlocal,res=32,frames=9", f"--workdir={vae_dir}",
       "--config.train.steps=4", "--config.vae.adv_weight=0.1", "--config.vae.adv_start_step=2",
       "--config.vae.perceptual_weight=0.1", f"--config.vae.perceptual_path={lpips}",
       "--config.vae.disc_channels=8", "--config.vae.disc_layers=2")
  os.remove(lpips)
  sora("train", "--config=configs/t2v.py:runlocal,res=32,frames=9", f"--workdir={t2v_dir}",
       f"--config.vae_workdir={vae_dir}", "--config.train.steps=4",
       f"--config.data.cache_dir={root / 'latents'}", "--config.data.cache_clips=8",
       "--config.train.eval_loss_num=5")   # 2 sampled (runlocal's eval_num), 5 for the losses
  return root, vae_dir, t2v_dir


def test_train_writes_checkpoints_metrics_and_videos(runs):
  _, vae_dir, t2v_dir = runs
  for d in (vae_dir, t2v_dir):
    assert sorted(os.listdir(os.path.join(d, "checkpoints")))[-1] == "4"
    rows = [json.loads(line) for line in open(os.path.join(d, "metrics.jsonl"))]
    train_rows = [r for r in rows if "loss" in r]
    assert train_rows[-1]["step"] == 4 and np.isfinite(train_rows[-1]["loss"])
    assert os.listdir(os.path.join(d, "videos"))
  cfg = json.load(open(os.path.join(t2v_dir, "config.json")))
  assert cfg["vae_workdir"] == vae_dir
  # Resolved at the start of the run, before the system was built: inference only reads them.
  assert cfg["diffusion"]["latent_scale"] > 0
  assert cfg["vae"] == json.load(open(os.path.join(vae_dir, "config.json")))["vae"]
  resolved = json.load(open(os.path.join(t2v_dir, "resolved.json")))
  assert resolved["latent_scale"] == cfg["diffusion"]["latent_scale"]
  assert resolved["tokens"] == 3 * 2 * 2 and resolved["shift"] > 0
  rows = [json.loads(line) for line in open(os.path.join(t2v_dir, "metrics.jsonl"))]
  # Held-out evaluation every train.eval_every steps (runlocal: 3): flow loss on a fixed t grid
  # and world-evaluator adherence with its chance level.
  evals = [r for r in rows if "eval/flow_loss" in r]
  assert [r["step"] for r in evals] == [3, 4]
  assert {"eval/flow_loss_t0.5", "eval/color", "eval/color_chance",
          "eval/text_gain_pct"} <= set(evals[-1])
  assert np.isfinite(evals[-1]["eval/text_gain_pct"])
  # Which words the model reads: the loss a swapped colour word adds (runlocal reads 16 bytes,
  # which hold the colour; shape and direction words are often cut, and then not reported).
  assert np.isfinite(evals[-1]["eval/color_gain_pct"])
  assert all(np.isfinite(v) for k, v in evals[-1].items() if k.endswith("_gain_pct"))
  assert np.isfinite(evals[-1]["eval/flow_loss"])
  # train.eval_loss_num: the loss report over 5 held-out clips (encoded 2 at a time, the last
  # chunk padded), the samples over eval_num's 2.
  assert evals[-1]["eval/loss_clips"] == 5
  vae_rows = [json.loads(line) for line in open(os.path.join(vae_dir, "metrics.jsonl"))]
  assert any("eval/psnr" in r and "eval/ssim" in r for r in vae_rows)
  # The DiT trained on latents its VAE encoded once into the cache.
  assert len(os.listdir(os.path.join(os.path.dirname(t2v_dir), "latents"))) == 1


def test_sample_writes_the_requested_video(runs, signing_key):
  root, _, t2v_dir = runs
  out = str(root / "red.mp4")
  # runlocal's text encoder reads 16 tokens: --long_prompt=warn cuts the prompt (as training did)
  text = sora("sample", f"--workdir={t2v_dir}", "--prompt", "a red circle bounces to the right",
              "--frames=5", "--height=32", "--width=48", "--seed=3", f"--out={out}",
              "--long_prompt=warn", "--guidance_interval=0.2,1")
  assert "wrote" in text
  frames, _ = video_io.read_video(out)
  assert frames.shape == (5, 32, 48, 3)
  # Labelled: signed credentials and a watermark, both read back by `sora-jax verify`.
  report = json.loads(sora("verify", out, f"--trust={signing_key[0]}"))
  assert report["valid"] and report["trusted"] and report["watermark"]["confidence"] > 0.99
  gen = report["manifest"]["generation"]
  assert gen["prompt"] == "a red circle bounces to the right" and gen["seed"] == 3
  assert gen["sampler"]["steps"] > 0 and len(gen["weights_sha256"]) == 64
  assert gen["sampler"]["guidance_interval"] == "0.2,1.0"   # the flag reached the sampler
  data = bytearray(open(out, "rb").read())
  data[len(data) // 2] ^= 0x01                      # one flipped byte in the media
  open(out, "wb").write(bytes(data))
  proc = subprocess.run([sys.executable, "-m", "sora_jax.cli", "verify", out],
                        capture_output=True, text=True, env=ENV, timeout=120)
  assert proc.returncode == 1 and '"valid": false' in proc.stdout


def test_sample_rejects_impossible_sizes_in_the_users_words(runs, tmp_path):
  _, _, t2v_dir = runs
  proc = subprocess.run([sys.executable, "-m", "sora_jax.cli", "sample", f"--workdir={t2v_dir}",
                         "--frames=6", f"--out={tmp_path / 'v.mp4'}", "--long_prompt=warn"],
                        capture_output=True,
                        text=True,
                        env=ENV, timeout=300)
  assert proc.returncode != 0
  assert "--frames=6 is not 1 + 4k" in proc.stderr


def test_eval_vae_writes_metrics(runs):
  root, vae_dir, _ = runs
  out = str(root / "metrics.json")
  sora("eval", "vae", f"--workdir={vae_dir}", "--split=test", "--num=4", f"--out={out}",
       "--world=large")
  result = json.load(open(out))
  m = result["procedural"]
  assert m["clips"] == 4 and 0 < m["psnr"] < 60 and -1 <= m["ssim"] <= 1
  assert m["compression_ratio"] == pytest.approx(9 * 32 * 32 * 3 / (3 * 4 * 4 * 4))
  # The world evaluator on the clips as rendered reads them perfectly; the tiny VAE's blurry
  # reconstructions score lower: the ceiling is a measurement, not a copy of the ground truth.
  ceiling = result["adherence_ceiling"]
  assert ceiling["world"] == "large" and ceiling["clips"] == 4
  assert ceiling["as_rendered"]["color"] == 1.0
  assert ceiling["reconstructed"]["overall"] < ceiling["as_rendered"]["overall"]


def test_eval_long_reports_drift_per_window_over_videos(runs):
  """`eval long` on the tiny run: two 4-second videos generated together in windows, scored per
  2-s window, with each score's drift (ratios to the first window, bootstrap intervals)."""
  root, _, t2v_dir = runs
  out = str(root / "long.json")
  sora("eval", "long", f"--workdir={t2v_dir}", "--seconds=4", "--num=2", "--steps=1",
       f"--out={out}")
  r = json.load(open(out))
  assert r["num_videos"] == 2 and len(r["captions"]) == 2 and len(r["windows"]) == 2
  for k in ("color", "shape"):
    d = r["drift"][k]
    assert len(d["window_mean"]) == 2 and isinstance(d["held"], bool)
    lo, hi = d["later_over_first_ci95"]
    # A ratio to a first window that scored 0 is undefined (None), never a number.
    assert (d["later_over_first"] is None) == (d["window_mean"][0] == 0)
    assert d["later_over_first"] is None or lo <= d["later_over_first"] <= hi
  # The same captions' own world clips, scored the same way, and the prompts they keep steady.
  assert r["world_reference"]["color"]["window_mean"][0] == 1.0
  assert 0 <= r["steady"]["num_videos"] <= 2 and len(r["per_video"]["shape"]) == 2
  assert len(r["background_shift"]) == 2 and r["background_shift"][0] == 0.0


def test_data_preview_writes_a_watchable_grid(tmp_path):
  out = str(tmp_path / "preview.mp4")
  sora("data", "preview", "--config=configs/vae.py:runlocal,res=32,frames=9", f"--out={out}",
       "--num_clips=2")
  frames, _ = video_io.read_video(out)
  assert frames.shape[0] == 9 and frames.std() > 5


def test_unknown_command_prints_usage():
  proc = subprocess.run([sys.executable, "-m", "sora_jax.cli", "frobnicate"],
                        capture_output=True, text=True, env=ENV)
  assert proc.returncode == 2 and "commands: train" in proc.stdout


def test_flops_prints_params_and_gmacs_side_by_side():
  text = sora("flops", "--config=configs/dit_paper.py:variant=XL/2")
  header, row = text.strip().splitlines()[-2:]
  cols = dict(zip([c.strip() for c in header.split("|")], [c.strip() for c in row.split("|")]))
  assert int(cols["params"]) == 674_834_720  # + 294,912 fixed pos-embed = the paper's 675.13M
  assert float(cols["gmacs_formula"]) == pytest.approx(118.6, abs=0.1)
  assert float(cols["gmacs_xla"]) == pytest.approx(118.6, rel=0.01)


def test_demo_samples_the_export_of_its_workdir_not_the_first_stage(tmp_path):
  # `demo --train --workdir=W` trains W/t2v (the first DiT stage) ... W/t2v_detail2 and exports
  # the shipped pair to W/export: the demo must sample the export, not W/t2v.
  from sora_jax import demo
  w = tmp_path / "w"
  assert demo.model_dir(None) == demo.model_dir(str(w)) == os.path.join(demo.ASSETS, "t2v")
  (w / "t2v").mkdir(parents=True)
  (w / "t2v" / "config.json").write_text("{}")
  assert demo.model_dir(str(w)) == str(w / "t2v")    # a plain `sora-jax train` run
  (w / "export" / "t2v").mkdir(parents=True)
  (w / "export" / "t2v" / "config.json").write_text("{}")
  assert demo.model_dir(str(w)) == str(w / "export" / "t2v")


@pytest.mark.parametrize("recipe", ["full", "fast"])
def test_demo_train_runs_the_recipes_stages_in_order_and_exports_into_its_workdir(
    tmp_path, monkeypatch, recipe):
  from configs import demo as demo_config
  from sora_jax import demo
  from sora_jax.train import loop
  runs, exported = [], []
  monkeypatch.setattr(loop, "train", lambda cfg, workdir: runs.append((cfg, workdir)))
  monkeypatch.setattr(demo, "export_assets", lambda *a: exported.append(a) or a[-1])
  w = str(tmp_path / "w")
  demo.train_and_export(w, recipe=recipe)
  stages = demo_config.RECIPES[recipe]
  assert [os.path.basename(d) for _, d in runs] == ["vae", *stages, "vae_refiner"]
  for (_, before), (cfg, _) in zip(runs[1:], runs[2:-1]):
    assert cfg.train.init_from == os.path.abspath(before)   # each DiT stage from the one before
  assert all(cfg.vae_workdir == os.path.abspath(runs[0][1]) for cfg, _ in runs[1:-1])
  assert [cfg.train.steps for cfg, _ in runs[1:-1]] == [
      demo_config.get_config(f"stage={s},recipe={recipe}").train.steps for s in stages]
  refiner = runs[-1][0]
  assert refiner.vae.refine_t2v == os.path.abspath(runs[-2][1])
  assert exported == [(runs[-1][1], runs[-2][1], os.path.join(w, "export"))]


def test_readme_main_job_writes_a_text_to_video_result(tmp_path):
  from sora_jax import demo
  if not os.path.isdir(os.path.join(demo.ASSETS, "t2v")):
    pytest.skip("demo weights not built (sora-jax demo --train)")
  out = str(tmp_path / "demo.mp4")
  sora("demo", "--prompt", "a blue square falls", f"--out={out}")
  frames, _ = video_io.read_video(out)
  assert frames.shape == (17, 64, 64, 3) and frames.std() > 1
  # The shipped model draws what it is asked for: the world evaluator finds a blue object.
  from sora_jax.eval import worlds as world_eval
  assert world_eval.score_video(frames, "a blue square falls")["color"] == 1.0
