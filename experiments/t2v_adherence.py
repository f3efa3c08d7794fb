"""Study: does the text-to-video model follow its prompts? World-evaluator scores on held-out
captions (test split and unseen colour×shape×motion combinations) against the chance level.

  python experiments/t2v_adherence.py --workdir=workdirs/demo/t2v [--num=64] [--out=results/t2v] \
      [--world=large]   # prompts from another world than the run's

Writes metrics.json, curves.png (training loss) and samples.png (generated frames per prompt).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from _plots import plot_curves, save_frames_png  # noqa: E402

from sora_jax.config import parse_interval  # noqa: E402
from sora_jax.eval import t2v_eval  # noqa: E402
from sora_jax.pipeline import TextToVideo  # noqa: E402


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--workdir", required=True)
  ap.add_argument("--num", type=int, default=64)
  ap.add_argument("--splits", default="test,test_compositional")
  ap.add_argument("--steps", type=int, default=None)
  ap.add_argument("--guidance", type=float, default=None)
  ap.add_argument("--prior_strength", type=float, default=None,
                  help="config.sample.layout_prior_strength (a run with model.layout_prior)")
  ap.add_argument("--guidance_interval", default=None,
                  help="LO,HI: guidance only where LO <= t <= HI (config.sample.guidance_interval)")
  ap.add_argument("--sampler", default=None, help="config.sample.sampler (flow: euler | heun)")
  ap.add_argument("--world", default="", help="prompts from this world instead of the run's "
                  "(e.g. a '_shots' run scored on the one-shot prompts of 'large')")
  ap.add_argument("--seed", type=int, default=0, help="first sampling seed (one per prompt)")
  ap.add_argument("--out", default="results/t2v_adherence")
  a = ap.parse_args()
  os.makedirs(a.out, exist_ok=True)
  t2v = TextToVideo.from_workdir(a.workdir, on_long="warn",   # captions as training cut them
                                 sample={"layout_prior_strength": a.prior_strength,
                                         "guidance_interval": parse_interval(a.guidance_interval),
                                         "sampler": a.sampler})
  data = t2v_eval.data_of_world(t2v.config.data, a.world)
  results = {"world": str(data.world)}
  for split in a.splits.split(","):
    captions = t2v_eval.held_out_captions(data, split, a.num)
    r = t2v_eval.evaluate(t2v, captions, num_steps=a.steps, guidance_scale=a.guidance,
                          seed=a.seed)
    videos = r.pop("videos")
    results[split] = r
    print(split, json.dumps(r, indent=1))
    if split == "test":
      save_frames_png(videos[:8], captions[:8], os.path.join(a.out, "samples.png"))
  results["sampler"] = {"steps": a.steps or t2v.config.sample.steps, "seed": a.seed,
                        "guidance": a.guidance or t2v.config.sample.guidance_scale,
                        "layout_prior_strength": t2v.config.sample.layout_prior_strength,
                        "guidance_interval": list(t2v.config.sample.guidance_interval),
                        "sampler": t2v.config.sample.sampler}
  with open(os.path.join(a.out, "metrics.json"), "w") as f:
    json.dump(results, f, indent=2)
  plot_curves(a.workdir, ["loss", "grad_norm"], os.path.join(a.out, "curves.png"),
              f"text-to-video training ({a.workdir})")


if __name__ == "__main__":
  main()
