"""Study: does the text-to-video model's latent hold the shape its decoded video loses?

The shipped model's circles come out as lumpy rounded squares (`shape_by_noise`: from a real
circle noised to t = 0.4 it returns one in under half the frames). Either the DiT's latent no
longer says "circle", or it does and the decoder, trained only on the encoder's latents, cannot
read it. This fine-tunes the VAE's decoder (encoder untouched, so the DiT is unchanged) on pairs
(latent the DiT made, clip it should show): training clips of the DiT's world, noised to t and
denoised by the DiT under their own captions (SDEdit), mixed half and half with the encoder's
own latents so it stays a decoder for real videos. If shape rises when text-to-video samples are
decoded by it, the information was in the latent (a decoder trained on the generator's outputs is
then worth having, as OpenAI's consistency decoder is for Stable Diffusion); if not, the loss is
the DiT's.

  python experiments/refiner_decoder.py --t2v=sora_jax/assets/demo/t2v --clips=512 \
      --steps=300 --out=workdirs/refiner          # then:
  python experiments/t2v_adherence.py --workdir=workdirs/refiner/t2v --num=64

Writes OUT/vae (a VAE export: the new decoder with the old encoder), OUT/t2v (the same DiT bound
to it) and OUT/train.json (the loss curve and the pairs' settings).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sora_jax import runs
from sora_jax.eval import t2v_eval
from sora_jax.systems.vae import to_model_range


def make_pairs(t2v, *, clips: int, strengths: list[float], split: str = "train",
               seed: int = 0):
  """(generated latents, encoder latents, videos uint8), VAE-scale latents [N, t, h, w, c]."""
  gen, enc, videos = [], [], []
  for i, b in enumerate(t2v_eval._held_out(t2v.config.data, split, clips)):  # noqa: SLF001
    video, caption = np.asarray(b["video"][0]), str(b["caption"][0])
    s = strengths[i % len(strengths)]
    lat = t2v.generate(caption, edit=video, strength=s, seed=seed + i, return_latents=True)
    gen.append(lat / t2v.system.scale)
    enc.append(t2v.encode(video) / t2v.system.scale)
    videos.append(video)
  return np.stack(gen), np.stack(enc), np.stack(videos)


def fine_tune(vae_system, vae_params, gen, enc, videos, *, steps: int, batch: int, lr: float,
              seed: int = 0):
  """Decoder-only L1 fine-tune; each batch half generated latents, half the encoder's."""
  decoder = {k: v for k, v in vae_params.items() if k == "decoder"}
  rest = {k: v for k, v in vae_params.items() if k != "decoder"}
  tx = optax.adam(optax.cosine_decay_schedule(lr, steps, alpha=0.1))
  opt_state = tx.init(decoder)

  @jax.jit
  def step(decoder, opt_state, z, x):
    def loss_fn(d):
      return jnp.mean(jnp.abs(vae_system.decode({**rest, **d}, z) - x))
    loss, grads = jax.value_and_grad(loss_fn)(decoder)
    updates, opt_state = tx.update(grads, opt_state, decoder)
    return optax.apply_updates(decoder, updates), opt_state, loss

  rng = np.random.default_rng(seed)
  losses = []
  half = batch // 2
  for _ in range(steps):
    gi, ei = rng.integers(0, len(gen), half), rng.integers(0, len(enc), batch - half)
    z = np.concatenate([gen[gi], enc[ei]])
    x = to_model_range(np.concatenate([videos[gi], videos[ei]]))
    decoder, opt_state, loss = step(decoder, opt_state, jnp.asarray(z), jnp.asarray(x))
    losses.append(float(loss))
  return {**rest, **jax.device_get(decoder)}, losses


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--t2v", default="sora_jax/assets/demo/t2v")
  ap.add_argument("--clips", type=int, default=512)
  ap.add_argument("--strengths", default="0.3,0.45,0.6,0.75",
                  help="SDEdit noise levels, cycled over the clips (each one compiles once)")
  ap.add_argument("--steps", type=int, default=300)
  ap.add_argument("--batch", type=int, default=4)
  ap.add_argument("--lr", type=float, default=1e-4)
  ap.add_argument("--out", default="workdirs/refiner")
  a = ap.parse_args()
  from sora_jax.pipeline import TextToVideo
  t2v = TextToVideo.from_workdir(a.t2v, on_long="warn")
  t0 = time.time()
  gen, enc, videos = make_pairs(t2v, clips=a.clips,
                                strengths=[float(s) for s in a.strengths.split(",")])
  t_pairs = time.time() - t0
  print(f"{len(gen)} pairs in {t_pairs:.0f} s; mean |gen - enc| {np.abs(gen - enc).mean():.3f}, "
        f"|enc| {np.abs(enc).mean():.3f}")
  vae_params, losses = fine_tune(t2v.system.vae, t2v.system.vae_params, gen, enc, videos,
                                 steps=a.steps, batch=a.batch, lr=a.lr)
  print(f"fine-tuned in {time.time() - t0 - t_pairs:.0f} s; L1 {np.mean(losses[:10]):.4f} -> "
        f"{np.mean(losses[-10:]):.4f}")
  src_vae = runs.resolve_run_path(runs.load_config(a.t2v).vae_workdir, a.t2v)
  vae_out, t2v_out = os.path.join(a.out, "vae"), os.path.join(a.out, "t2v")
  for d in (vae_out, t2v_out):
    os.makedirs(d, exist_ok=True)
  shutil.copy(os.path.join(src_vae, runs.CONFIG_FILE), vae_out)
  runs.write_export_params(vae_out, {"vae": jax.tree.map(np.asarray, vae_params)})
  with open(os.path.join(a.t2v, runs.CONFIG_FILE)) as f:
    cfg = json.load(f)
  cfg["vae_workdir"] = "../vae"
  with open(os.path.join(t2v_out, runs.CONFIG_FILE), "w") as f:
    json.dump(cfg, f, indent=2)
  for name in (runs.PARAMS_FILE, runs.PARAMS_FILE + ".sha256"):
    shutil.copy(os.path.join(a.t2v, name), t2v_out)
  with open(os.path.join(a.out, "train.json"), "w") as f:
    json.dump({"t2v": a.t2v, "clips": a.clips, "strengths": a.strengths, "steps": a.steps,
               "batch": a.batch, "lr": a.lr, "pairs_s": t_pairs, "loss": losses}, f)


if __name__ == "__main__":
  main()
