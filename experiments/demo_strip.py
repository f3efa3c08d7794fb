"""The README's picture: what the shipped demo model (or any t2v run) makes of a few prompts.

  python experiments/demo_strip.py                          # the shipped model -> docs/demo_strip.png
  python experiments/demo_strip.py --workdir=workdirs/demo/t2v --out=/tmp/strip.png

One row per prompt: every other frame of the 17-frame video, upscaled so a 64-pixel frame can be
seen, with the prompt and what the world evaluator read back (colour / shape / direction scores).
The videos are exactly what `sora-jax demo --prompt ... --seed 0` writes, before labelling.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from sora_jax import demo, runs  # noqa: E402
from sora_jax.eval import shots  # noqa: E402
from sora_jax.eval import worlds as world_eval  # noqa: E402
from sora_jax.pipeline import TextToVideo  # noqa: E402

PROMPTS = ("a red circle bounces to the right", "a blue square falls down",
           "a yellow star moves to the left", "a green triangle grows larger",
           "a magenta circle bounces upward", "a cyan square slides to the right",
           "a close-up of a magenta triangle falling down, then a wide shot")


def strip(videos, labels, out_png: str, scale: int = 2, every: int = 2) -> None:
  from PIL import Image, ImageDraw
  rows = [np.concatenate(list(v[::every]), axis=1) for v in videos]
  h, w = rows[0].shape[0] * scale, rows[0].shape[1] * scale
  label_h = 16
  canvas = Image.new("RGB", (w, (h + label_h) * len(rows)), (255, 255, 255))
  draw = ImageDraw.Draw(canvas)
  for i, (row, text) in enumerate(zip(rows, labels)):
    y = i * (h + label_h)
    draw.text((4, y + 2), text, fill=(0, 0, 0))
    canvas.paste(Image.fromarray(row).resize((w, h), Image.NEAREST), (0, y + label_h))
  os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
  canvas.save(out_png)


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--workdir", default=os.path.join(demo.ASSETS, "t2v"))
  ap.add_argument("--prompts", default="|".join(PROMPTS), help="'|'-separated prompts")
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--guidance", type=float, default=None,
                  help="classifier-free guidance scale (default: the run's sample.guidance_scale)")
  ap.add_argument("--out", default="docs/demo_strip.png")
  a = ap.parse_args(argv)
  prompts = [p.strip() for p in a.prompts.split("|") if p.strip()]
  system, params = runs.open_t2v(a.workdir)
  t2v = TextToVideo(system, params)
  videos = [t2v(p, seed=a.seed, guidance_scale=a.guidance) for p in prompts]   # one prompt per call, as the demo does
  labels = []
  for p, v in zip(prompts, videos):
    if shots.parse_shots(p):   # two shots: is there a cut, and is the subject kept across it
      s = shots.score_shots(v, p)
      labels.append(f"{p}   cut {s['cut']:.0f}  close-up {s['closeup']:.2f}  "
                    f"colour kept {s['color_kept']:.2f}  shape kept {s['shape_kept']:.2f}")
    else:
      s = world_eval.score_video(v, p, fps=float(system.config.data.fps))
      labels.append(f"{p}   colour {s['color']:.2f}  shape {s['shape']:.2f}  "
                    f"direction {s['direction']:.2f}")
    print(labels[-1], flush=True)
  strip(videos, labels, a.out)
  print(f"wrote {a.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
