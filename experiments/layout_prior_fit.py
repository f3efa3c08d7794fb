"""Can the layout prior learn where the caption puts the object, with nothing else competing?

  python experiments/layout_prior_fit.py --workdir=W --cache=LATENTS.npz [--steps=3000] \
      [--lr=1e-3] [--batch=32] [--strengths=0,0.9,0.95] [--num=64] \
      [--out=experiments/results/layout_prior_fit] [--save=DIR]

From a run with model.layout_prior (its raw, not EMA, weights), trains only the prior's own loss
(the MSE of the caption's predicted clean clip: text encoder, layout readout and head; the DiT's
blocks get no gradient) on the run's latent cache, and every 250 steps decodes the prior for the
detailed caption with only "It starts near the <place> of the frame." changed
(direction_probe.prior_placement). Then, for each sample.layout_prior_strength, samples the same
captions from 16 seeds (direction_probe.placement) and scores `--num` held-out test prompts with
the world evaluator. The readout also feeds the DiT's tokens, so strength 0 here is not the
source run: it is the same DiT reading a retrained readout. Writes table.json, table.md,
command.txt; `--save` also writes the fitted weights as an export (config.json + params.msgpack)
that `sora-jax sample` reads and `--config.train.init_from` fine-tunes from.
"""
from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(__file__))
import direction_probe  # noqa: E402
from _plots import write_table  # noqa: E402

from sora_jax import runs  # noqa: E402
from sora_jax.data import latent_cache  # noqa: E402
from sora_jax.eval import t2v_eval  # noqa: E402
from sora_jax.pipeline import TextToVideo  # noqa: E402

KEYS = ("latents", "tokens", "text_mask")


def fit_prior(system, params, batches, steps: int, lr: float, every: int = 0, on_every=None):
  """Adam on the layout prior's MSE alone for `steps` batches; returns (params, losses).
  `on_every(step, params, mean_loss)` runs every `every` steps (and at the end)."""
  opt = optax.adam(lr)

  def loss_fn(p, b):
    prior = system.layout_prior(p, b["tokens"], b["text_mask"])
    return jnp.mean(jnp.square(prior - b["latents"]))

  @jax.jit
  def step(p, state, b):
    loss, grads = jax.value_and_grad(loss_fn)(p, b)
    updates, state = opt.update(grads, state, p)
    return optax.apply_updates(p, updates), state, loss

  state, losses = opt.init(params), []
  for i in range(1, steps + 1):
    batch = {k: jnp.asarray(v) for k, v in next(batches).items() if k in KEYS}
    params, state, loss = step(params, state, batch)
    losses.append(float(loss))
    if on_every is not None and every and (i % every == 0 or i == steps):
      on_every(i, params, float(np.mean(losses[-every:])))
  return params, losses


def save_export(system, params, out_dir: str) -> str:
  """The run's config and `params` as an export directory (runs.load_params reads it)."""
  runs.save_config(system.config, out_dir)
  return runs.write_export_params(out_dir, jax.tree.map(np.asarray, params))


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--workdir", required=True)
  ap.add_argument("--cache", required=True, help="the run's latent cache (.npz, data.cache_dir)")
  ap.add_argument("--steps", type=int, default=3000)
  ap.add_argument("--lr", type=float, default=1e-3)
  ap.add_argument("--batch", type=int, default=32)
  ap.add_argument("--strengths", default="0,0.9,0.95")
  ap.add_argument("--num", type=int, default=64)
  ap.add_argument("--subject", default="red square")
  ap.add_argument("--out", default="experiments/results/layout_prior_fit")
  ap.add_argument("--save", default="", help="write the fitted weights here as an export")
  a = ap.parse_args()
  os.makedirs(a.out, exist_ok=True)
  with open(os.path.join(a.out, "command.txt"), "w") as f:
    f.write("python " + " ".join(sys.argv) + "\n")
  system, params = runs.open_t2v(a.workdir, use_ema=False)
  if not system.config.model.get("layout_prior", False):
    raise SystemExit(f"{a.workdir} has no model.layout_prior: nothing to fit")
  batches = iter(latent_cache.make_dataset(a.cache, a.batch, seed=0))
  curve = []

  def report(step, p, loss):
    rows = direction_probe.prior_placement(TextToVideo(system, p, on_long="warn"), a.subject)
    curve.append({"step": step, "loss": loss, **{r["place"]: [r["x"], r["y"]] for r in rows}})
    print(step, f"loss {loss:.4f}", " ".join(f"{r['place']} {r['x']:.2f},{r['y']:.2f}"
                                             for r in rows), flush=True)

  params, _ = fit_prior(system, params, batches, a.steps, a.lr, every=250, on_every=report)
  if a.save:
    save_export(system, params, a.save)
  captions = t2v_eval.held_out_captions(t2v_eval.data_of_world(system.config.data, ""), "test",
                                        a.num)
  sampled = []
  for s in (float(x) for x in a.strengths.split(",")):
    system.config.sample.layout_prior_strength = s
    t2v = TextToVideo(system, params, on_long="warn")
    rows = direction_probe.placement(t2v, a.subject, 16)
    r = t2v_eval.evaluate(t2v, captions)
    sampled.append({"strength": s, **{q["place"]: [q["x"], q["y"]] for q in rows},
                    **{k: r["adherence"][k] for k in ("color", "direction", "shape")},
                    "direction_by_motion": {m: v[0] for m, v in
                                            r["direction_by_motion"].items()}})
  places = direction_probe.PLACES
  md = ["| step | prior loss | " + " | ".join(f"prior {p}: x, y" for p in places) + " |",
        "|---:|---:|" + "---:|" * len(places)]
  md += [f"| {c['step']} | {c['loss']:.4f} | " + " | ".join(
      f"{c[p][0]:.2f}, {c[p][1]:.2f}" for p in places) + " |" for c in curve]
  md += ["", "| layout_prior_strength | " + " | ".join(f"{p}: x, y" for p in places)
         + " | colour | direction | shape |", "|---:|" + "---:|" * (len(places) + 3)]
  md += [f"| {r['strength']} | " + " | ".join(f"{r[p][0]:.2f}, {r[p][1]:.2f}" for p in places)
         + f" | {r['color']:.2f} | {r['direction']:.2f} | {r['shape']:.2f} |" for r in sampled]
  write_table(a.out, {"curve": curve, "sampled": sampled}, "\n".join(md) + "\n")


if __name__ == "__main__":
  main()
