"""VAE compression: 1x8x8 vs 4x8x8 vs 4x16x16 latents, each VAE trained the same way, then the
same DiT on each one's latents.

  python experiments/vae_compression.py                           # CPU size
  python experiments/vae_compression.py --comps 4x8x8,4x16x16 --vae_steps 2400 --steps 2000

For each compression (time x height x width): a VAE trained by the demo recipe
(configs/demo.py:stage=vae,comp=..., --vae_steps steps, 9-frame 64x64 clips) in
<workdir>/vae_compression/vae_<comp> (resumable; skipped when done), its held-out PSNR
(the loop's last eval/psnr), then the demo DiT (Ti, 1x2x2 patches) trained --steps on its
latents and evaluated like every study. Compression trades reconstruction for tokens: at
64x64x17, 1x8x8 gives 17x8x8 latents (272 tokens), 4x8x8 5x8x8 (80), 4x16x16 5x4x4 (20).
Writes experiments/results/vae_compression/{table.json,table.md,plot.png}.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import demo as demo_config  # noqa: E402
from experiments import _study  # noqa: E402

COMPS = "1x8x8,4x8x8,4x16x16"


def vae_config(comp: str, steps: int, smoke: bool):
  c = demo_config.get_config(f"stage=vae,comp={comp},steps={steps}"
                             + (",runlocal" if smoke else "")).unlock()
  if smoke:
    c.data.batch_size = _study.smoke_batch(c.data.batch_size)
  c.train.sample_every = 0
  c.train.ckpt_every = steps
  c.train.eval_every = steps   # one held-out PSNR at the end
  return c.lock()


def vae_psnr(workdir: str, steps: int) -> float | None:
  """The held-out PSNR the VAE run logged at its last step, None before it got there."""
  from sora_jax.train import metrics as metrics_lib
  values = [r["eval/psnr"] for r in metrics_lib.read_metrics(workdir)
            if "eval/psnr" in r and r["step"] >= steps]
  return float(values[-1]) if values else None


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  _study.add_args(ap, steps=600)
  ap.add_argument("--comps", default=COMPS, help="TxHxW compressions, comma-separated")
  ap.add_argument("--vae_steps", type=int, default=2400, help="VAE training steps per point")
  a = ap.parse_args(argv)
  if a.vae_workdir:
    ap.error("--vae_workdir does not apply: this study trains one VAE per compression")
  vae_dir = lambda p: os.path.abspath(os.path.join(a.workdir, "vae_compression",  # noqa: E731
                                                   "vae_" + p["comp"]))

  def configure(c, p):
    c = c.unlock()
    c.vae_workdir = vae_dir(p)
    if a.smoke:   # the smoke DiT reads the untrained runlocal VAE's shapes: train it the same
      c.vae = vae_config(p["comp"], a.vae_steps, True).vae
    return c.lock()

  def prepare(p, c):
    from sora_jax.train import loop
    del c
    wd = vae_dir(p)
    vc = vae_config(p["comp"], a.vae_steps, a.smoke)
    if vae_psnr(wd, a.vae_steps) is None:   # not trained, or interrupted: the loop resumes
      loop.train(vc, wd)
    return {"vae_psnr": vae_psnr(wd, a.vae_steps), "vae_steps": a.vae_steps}

  points = _study.sweep("comp", a.comps.split(","))
  _study.run_study("vae_compression", points, a, x="tokens", series=None, configure=configure,
                   prepare=prepare, title="VAE compression: reconstruction vs tokens vs the DiT",
                   note=f"Each VAE: the demo VAE recipe for {a.vae_steps} steps; vae_psnr is its "
                        "held-out PSNR (dB) on 9-frame 64x64 clips.")
  return 0


if __name__ == "__main__":
  sys.exit(main())
