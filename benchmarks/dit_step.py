"""DiT forward and train-step throughput, compile time, memory and MFU, optionally against PyTorch.

  python benchmarks/dit_step.py [--variants S/2,B/2,demo] [--batch 8] [--steps 7] [--warmup 2]
      [--dtype float32|bfloat16] [--attention xla|cudnn] [--remat auto|none|<policy>]
      [--unrolled]
      [--json] [--peer [--rounds 3]]

Rows (one per variant and mode):
  S/2, B/2 (any S|B|L|XL/2|4|8): configs/dit_paper.py, the DiT paper's class-conditional model on
    32x32x4 latents (one frame; 256 tokens at patch 2), learn_sigma (8 output channels), DDPM eps
    objective (linear betas, uniform k), class dropout 0.1 to the null class for CFG, AdamW
    (constant lr 1e-4, no clip, EMA 0.9999) -- all read from that config. The loss is eps-MSE on
    the first 4 output channels; the paper's VLB term on the sigma half is left out (elementwise:
    its cost is negligible against the transformer).
  demo: configs/demo.py:stage=t2v, DiT 'Ti' depth 6 on a 5x8x8x16 latent (80 tokens) with random
    text context 48 x 128 (no VAE, no text encoder: their cost is not the DiT's), rectified flow
    (logit-normal t, shift 'auto'), caption dropout 0.1, that config's AdamW.
  fwd   = the DiT's apply on (x_t, t, condition) alone.
  train = the REAL train step, train/steps.py make_train_step: objective loss, backward, AdamW
    (train/optimizer.py make_optimizer, from the config's optim section) and the EMA update;
    jitted with donate_argnums=0, state from train/state.py make_init_fn + unbox.
"images/s" is examples/s: an image for S/2 and B/2, a 17-frame clip for demo.

Measurement: AOT lower+compile timed as compile_s; then --warmup untimed calls and the median of
--steps timed calls, each ended by block_until_ready. peak_mib = compiled.memory_analysis()
(argument + output + temp - alias); dev_peak_mib = the device's peak_bytes_in_use where the
backend reports it (GPU) -- a process high-water mark, so fwd runs before train and the clean
figure for a variant comes from running it alone (--variants S/2).

FLOPs per example, analytic (sora_jax/eval/flops.py forward_macs_formula, x2 for FLOPs), with
N tokens, D width, H MLP hidden, L text tokens, per layer:
  2 * [ N*4*D^2 (q,k,v,out) + 2*N^2*D (QK^T, AV) + N*2*D*H (gelu; 3*D*H for swiglu)
        + 6*D^2 (adaLN modulation, per example) + text: 2*N*D^2 + 2*L*D^2 + 2*N*L*D ]
  times depth, plus patch embedding, final projection, timestep MLP and final adaLN. The train
step counts 3x the forward (backward = 2x forward); remat's recomputed forward is NOT counted, so
MFU is "model FLOPs utilisation". XLA's own count of the forward (flops.model_macs_xla, from
unrolled depth-1/2 copies, because cost_analysis counts a scanned layer once) is printed beside
it; it also counts softmax, norms and activations, so it reads a few % higher.
MFU = achieved FLOP/s / 790e12, the H200's measured bf16 dense rate, on GPU only. fp32 rows are
held against the same bf16 number, so their MFU is small by construction.

--peer runs ../shared/peers/dit_torch.py (diffusers' DiTTransformer2DModel, fp32, CPU) on the
same rows in its own venv, alternating with ours --rounds times (the median of each side is
reported), and prints ours/theirs. It exists for S/2-like variants only (patch 2, class) and runs
on the CPU only, so on a GPU backend its rows are skipped. Venv: PEER_PYTHON, else
${XDG_CACHE_HOME:-~/.cache}/dit-peer-venv/bin/python (made by ../shared/peers/setup_venv.sh).
No XLA flags are set here.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp

from configs import demo as demo_config
from configs import dit_paper
from sora_jax import config as config_lib
from sora_jax.diffusion.objective import make_objective
from sora_jax.eval import flops
from sora_jax.models import dit as dit_lib
from sora_jax.train import state as state_lib
from sora_jax.train import steps as steps_lib
from sora_jax.train.optimizer import make_optimizer

H200_BF16_FLOPS = 790e12  # measured dense bf16 matmul rate of the H200 (not the 989e12 spec)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEER = os.path.join(ROOT, "..", "shared", "peers", "dit_torch.py")
MIB = 2.0 ** 20


class Recipe:
  """The loss of one config on given latents: what make_train_step / make_init_fn ask of a task."""

  def __init__(self, model, objective, num_tokens: int, drop_prob: float = 0.1):
    self.model, self.objective, self.num_tokens, self.drop_prob = (model, objective, num_tokens,
                                                                   drop_prob)
    self.channels = model.in_channels

  def _kwargs(self, cond):
    if self.model.cond == "class":
      return dict(labels=cond)
    return dict(context=cond[0], context_mask=cond[1])

  def cond(self, batch):
    return batch["labels"] if self.model.cond == "class" else (batch["context"], batch["mask"])

  def apply(self, params, x, t, cond):
    out = self.model.apply({"params": params["dit"]}, x, t, **self._kwargs(cond))
    return out[..., :self.channels]  # learn_sigma: the eps half (the VLB half is not trained here)

  def init(self, rng, batch):  # boxed (nn.LogicallyPartitioned) params, as make_optimizer needs
    t = jnp.zeros((batch["latents"].shape[0],), jnp.float32)
    return {"dit": self.model.init(rng, batch["latents"], t,
                                   **self._kwargs(self.cond(batch)))["params"]}

  def loss(self, params, batch, rng, step):
    del step
    r_drop, r_loss = jax.random.split(rng)
    drop = jax.random.bernoulli(r_drop, self.drop_prob, (batch["latents"].shape[0],))
    cond = self.cond(batch)
    if self.model.cond == "class":  # CFG: the null class is label num_classes
      cond = jnp.where(drop, self.model.num_classes, cond)
    else:  # CFG: the null caption (first token only, as text_encoder.null_text)
      null = jnp.arange(cond[1].shape[1])[None] == 0
      cond = (cond[0], jnp.where(drop[:, None], null, cond[1]))
    loss, m = self.objective.loss(lambda x, t, c: self.apply(params, x, t, c),
                                  batch["latents"], r_loss, cond, self.num_tokens)
    return loss, {"t_mean": m["t_mean"]}


def get_config(variant: str, a):
  c = demo_config.get_config("stage=t2v") if variant == "demo" else \
      dit_paper.get_config(f"variant={variant}")
  c = c.unlock()
  c.model.dtype, c.model.attention_impl, c.model.remat_policy = a.dtype, a.attention, a.remat
  c.model.scan_layers = not a.unrolled
  config_lib.check_model(c)  # cudnn needs bf16: said in the config's words, before compiling
  return c.lock()


def make_batch(recipe, latent, ctx_len, text_width, batch, rng):
  k = jax.random.split(rng, 3)
  out = {"latents": jax.random.normal(k[0], (batch, *latent))}
  if recipe.model.cond == "class":
    out["labels"] = jax.random.randint(k[1], (batch,), 0, recipe.model.num_classes)
  else:
    out["context"] = jax.random.normal(k[1], (batch, ctx_len, text_width))
    out["mask"] = jnp.ones((batch, ctx_len), bool)
  return out


def aot(jitted, *args):
  t0 = time.perf_counter()
  compiled = jitted.lower(*args).compile()
  return compiled, time.perf_counter() - t0


def median_time(call, warmup: int, steps: int) -> float:
  for _ in range(warmup):
    jax.block_until_ready(call())
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    jax.block_until_ready(call())
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def device_peak_mib():
  stats = jax.local_devices()[0].memory_stats() or {}
  return stats["peak_bytes_in_use"] / MIB if "peak_bytes_in_use" in stats else None


def peer_python():
  py = os.environ.get("PEER_PYTHON") or os.path.join(
      os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "dit-peer-venv", "bin",
      "python")
  return py if os.path.exists(py) else None


def run_peer(py, variant, mode, a) -> float:
  cmd = [py, PEER, "--variant", variant.split("/")[0], "--batch", str(a.batch), "--mode", mode,
         "--iters", str(a.steps), "--warmup", str(a.warmup)]
  out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
  return json.loads(out.strip().splitlines()[-1])["images_per_s"]


def bench_variant(variant: str, c, a, peer) -> list[dict]:
  latent, ctx_len, text_width = flops.latent_geometry(c)
  model = dit_lib.dit_from_config(c.model, in_channels=latent[-1], text_width=text_width)
  tokens = 1
  for s, p in zip(latent[:3], model.patch):
    tokens *= s // p
  recipe = Recipe(model, make_objective(c.diffusion), tokens,
                  c.text.drop_prob if model.cond == "text" else 0.1)
  rng = jax.random.key(0)
  batch = make_batch(recipe, latent, ctx_len, text_width, a.batch, jax.random.key(1))

  boxed = jax.eval_shape(recipe.init, rng, batch)  # shapes + logical names are all it reads
  tx, sched = make_optimizer(c.optim, int(c.train.steps), boxed, players=None)
  state = jax.jit(lambda r, b: state_lib.unbox(state_lib.make_init_fn(recipe, tx)(r, b)))(
      rng, batch)

  # FLOPs per example: formula, and XLA's count on an fp32/xla copy (cuDNN cannot compile on CPU)
  fwd_flops = 2 * flops.forward_macs_formula(c.model, tokens, ctx_len, in_channels=latent[-1],
                                             out_channels=model.out_channels,
                                             text_width=text_width)
  xla_model = dataclasses.replace(model, dtype=jnp.float32, attention_impl="xla")
  xla_fwd_flops = 2 * flops.model_macs_xla(xla_model, latent, ctx_len, text_width)
  on_gpu = jax.default_backend() == "gpu"
  base = dict(variant=variant, batch=a.batch, dtype=a.dtype, attention=a.attention,
              remat=dit_lib.remat_policy_for_backend(a.remat), layers="unrolled" if a.unrolled else "scan", tokens=tokens, params=state_lib.param_count(state.params))

  t = jax.random.uniform(jax.random.key(2), (a.batch,), minval=1e-3, maxval=1.0)
  fwd = jax.jit(lambda p, b, t: recipe.apply(p, b["latents"], t, recipe.cond(b)))
  keys = [jax.random.key(10 + i) for i in range(a.warmup + a.steps)]
  rows = []
  for mode in ("fwd", "train"):
    if mode == "fwd":
      compiled, compile_s = aot(fwd, state.params, batch, t)
      call = lambda: compiled(state.params, batch, t)  # noqa: E731
    else:
      step = jax.jit(steps_lib.make_train_step(recipe, tx, sched, float(c.optim.ema_decay)),
                     donate_argnums=0)
      compiled, compile_s = aot(step, state, batch, keys[0])
      box = {"state": state, "i": 0}
      del state  # donated from here on: only the box holds the live state

      def call():
        box["state"], m = compiled(box["state"], batch, keys[box["i"] % len(keys)])
        box["i"] += 1
        return box["state"].step, m
    facts = steps_lib.compiled_facts(compiled)
    ours, theirs = [], []
    peer_ok = peer is not None and model.cond == "class" and model.patch[1:] == (2, 2)
    for r in range(a.rounds if peer_ok else 1):  # ours, theirs, ours, theirs...
      ours.append(a.batch / median_time(call, a.warmup if r == 0 else 1, a.steps))
      if peer_ok:
        theirs.append(run_peer(peer, variant, mode, a))
    ips = statistics.median(ours)
    per_ex = fwd_flops * (3 if mode == "train" else 1)
    row = dict(base, mode=mode, images_per_s=ips, compile_s=compile_s,
               peak_mib=facts.get("peak_bytes_estimate", float("nan")) / MIB,
               dev_peak_mib=device_peak_mib(), gflop_per_example=per_ex / 1e9,
               xla_gflop_per_example=xla_fwd_flops * (3 if mode == "train" else 1) / 1e9,
               tflops=per_ex * ips / 1e12)
    if on_gpu:
      row["mfu"] = per_ex * ips / H200_BF16_FLOPS
    if theirs:
      row["peer_images_per_s"] = statistics.median(theirs)
      row["ours_over_theirs"] = ips / row["peer_images_per_s"]
    rows.append(row)
    if a.json:
      print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}),
            flush=True)
  return rows


COLS = [("variant", "{}"), ("mode", "{}"), ("batch", "{}"), ("dtype", "{}"), ("attention", "{}"),
        ("remat", "{}"), ("layers", "{}"), ("images_per_s", "{:.2f}"), ("compile_s", "{:.1f}"),
        ("peak_mib", "{:.0f}"), ("dev_peak_mib", "{:.0f}"), ("gflop_per_example", "{:.2f}"),
        ("xla_gflop_per_example", "{:.2f}"), ("tflops", "{:.3f}"), ("mfu", "{:.1%}"),
        ("peer_images_per_s", "{:.2f}"), ("ours_over_theirs", "{:.2f}x")]


def table(rows) -> str:
  cols = [(k, f) for k, f in COLS if any(r.get(k) is not None for r in rows)]
  lines = ["| " + " | ".join(k for k, _ in cols) + " |", "|" + "---|" * len(cols)]
  for r in rows:
    lines.append("| " + " | ".join("-" if r.get(k) is None else f.format(r[k])
                                   for k, f in cols) + " |")
  return "\n".join(lines)


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--variants", default="S/2,B/2,demo")
  ap.add_argument("--batch", type=int, default=8)
  ap.add_argument("--steps", type=int, default=7, help="timed steps (median)")
  ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
  ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                  help="model.dtype (activations); params stay float32")
  ap.add_argument("--attention", default="xla", choices=("xla", "cudnn"))
  ap.add_argument("--remat", default="auto", choices=("auto", "none", *dit_lib.REMAT_POLICIES),
                  help="model.remat_policy (auto: matmuls kept on a CPU, nothing kept elsewhere)")
  ap.add_argument("--unrolled", action="store_true",
                  help="model.scan_layers=False: one copy of the block per layer, no scan")
  ap.add_argument("--json", action="store_true", help="one JSON line per row; table on stderr")
  ap.add_argument("--peer", action="store_true", help="also time the PyTorch peer (CPU only)")
  ap.add_argument("--rounds", type=int, default=1, help="--peer: ours/theirs alternations")
  a = ap.parse_args()
  dev = jax.devices()[0]
  print(f"# {dev.platform} {dev.device_kind} x{jax.device_count()}, jax {jax.__version__}, "
        f"batch {a.batch}, {a.dtype}, attention {a.attention}, remat {a.remat}", file=sys.stderr)
  peer = None
  if a.peer:
    if jax.default_backend() != "cpu":
      print("# --peer: dit_torch.py times torch on the CPU only; no like-for-like rows on "
            f"{jax.default_backend()}: skipped", file=sys.stderr)
    elif not os.path.exists(PEER):
      print(f"# --peer: {PEER} not found: skipped", file=sys.stderr)
    elif (peer := peer_python()) is None:
      print("# --peer: no peer venv; make it once (torch + diffusers, ~1 GB, outside the repo):\n"
            "#   bash ../shared/peers/setup_venv.sh   (or point PEER_PYTHON at a python with both)",
            file=sys.stderr)
    elif a.dtype != "float32":
      print("# --peer: the peer runs float32; the ratio is ours-bf16 / torch-fp32", file=sys.stderr)
  try:  # every config checked before anything compiles
    configs = {v.strip(): get_config(v.strip(), a) for v in a.variants.split(",")}
  except (config_lib.ConfigError, ValueError) as e:
    ap.error(str(e))
  rows = []
  for v, c in configs.items():
    rows += bench_variant(v, c, a, peer)
  print(table(rows), file=sys.stderr if a.json else sys.stdout)


if __name__ == "__main__":
  main()
