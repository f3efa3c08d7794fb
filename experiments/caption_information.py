"""Study: how much of each caption word the model uses, against how much the data offers.

At t = 1 (pure noise in) the best flow prediction is the caption's mean clip, so the loss a
swapped word should add there follows from the training latents alone
(`counterfactual.ideal_costs`). This prints that beside the model's own swap cost on the same
clips at high noise (`counterfactual.held_out_losses`): a word the model reads costs about what
the data says; a word it ignores costs ~0 however much the data offers.

  python experiments/caption_information.py --workdir=sora_jax/assets/demo/t2v \\
      --cache=workdirs/demo/latents/latents_<key>.npz [--num=256] [--out=results/caption_info]

--cache is the latent cache the run trained on (its path is in the run's log, "latent cache").
"""
from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _plots import write_table  # noqa: E402

from sora_jax.eval import counterfactual as cf  # noqa: E402
from sora_jax.pipeline import TextToVideo  # noqa: E402


def model_swap_costs(t2v, latents: np.ndarray, captions: list[str], t_grid: tuple[float, ...]
                     ) -> dict[float, dict[str, float]]:
  """{t: {'<attribute>_gain_pct': swap cost in %}} of the model on these clips."""
  names, tokens, masks = cf.captionings(t2v.system, captions, world=True)
  losses = jax.jit(cf.held_out_losses(t2v.system, t_grid))(
      t2v.params, jnp.asarray(latents), jnp.asarray(tokens), jnp.asarray(masks),
      jax.random.key(0))
  losses = np.asarray(losses)
  return {t: cf.loss_report(names, tokens, losses[:, i:i + 1], (t,))
          for i, t in enumerate(t_grid)}


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--workdir", required=True, help="a t2v run or export")
  ap.add_argument("--cache", required=True, help="the latent cache (.npz) it trained on")
  ap.add_argument("--num", type=int, default=256, help="clips for the model's losses")
  ap.add_argument("--t", default="0.9,1.0", help="noise levels of the model's losses")
  ap.add_argument("--out", default="results/caption_info")
  a = ap.parse_args()
  os.makedirs(a.out, exist_ok=True)
  z = np.load(a.cache)
  captions = [str(c) for c in z["caption"]]
  t_grid = tuple(float(t) for t in a.t.split(","))
  t2v = TextToVideo.from_workdir(a.workdir, on_long="warn")
  model = model_swap_costs(t2v, z["latents"][:a.num], captions[:a.num], t_grid)
  rows = {}
  for attr in cf.ATTRIBUTES:
    rows[attr] = {"ideal_t1": cf.ideal_costs(z["latents"], captions, attr)}
    rows[attr].update({f"model_swap_pct_t{t:g}": model[t].get(f"{attr}_gain_pct")
                       for t in t_grid})
  floors = {name: cf.ideal_loss(z["latents"], captions, keys) for name, keys in
            (("no caption", ()), ("colour, motion", ("color", "motion")),
             ("colour, motion, direction", ("color", "motion", "direction")))}
  rows["t1_loss"] = {"model": model[max(t_grid)]["flow_loss"], "ideal": floors}
  head = " | ".join(f"model swap cost, t={t:g}" for t in t_grid)
  md = [f"{a.workdir} on {len(captions)} cached clips ({a.num} for the model's losses)", "",
        f"| attribute | clips | ideal gain at t=1 | ideal swap cost at t=1 | {head} |",
        "|---|---:|---:|---:|" + "---:|" * len(t_grid)]
  for attr in cf.ATTRIBUTES:
    r = rows[attr]
    i = r["ideal_t1"]
    vals = " | ".join(f"{r[f'model_swap_pct_t{t:g}']:+.2f} %"
                      if r[f"model_swap_pct_t{t:g}"] is not None else "-" for t in t_grid)
    md.append(f"| {attr} | {i['clips']} | {i['gain_pct']:+.2f} % | {i['swap_pct']:+.2f} % "
              f"| {vals} |")
  md += ["", f"Loss at t={max(t_grid):g}: the model {rows['t1_loss']['model']:.3f}; "
         "predicting each clip by the mean of the clips whose captions agree on "
         + ", ".join(f"{k}: {v:.3f}" for k, v in floors.items())
         + " (the cache's latents are the model's scaled ones)"]
  write_table(a.out, {"workdir": a.workdir, "cache": a.cache, "num": a.num, "rows": rows},
              "\n".join(md) + "\n")


if __name__ == "__main__":
  main()
