"""Study: can guidance aimed at the shape word make a text-to-video model draw the prompted shape?

Classifier-free guidance steers from the null caption by default. Here it steers from a negative
prompt instead (T2VSystem.sample_latents(negative=...)): the caption with its shape word (or
a synonym: 'ball', 'block') swapped for another shape ('swap': circle <-> square, triangle and
star -> square, the shapes they are drawn as most), or with the shape word dropped ('drop'). If
the model's conditional and negative predictions differ mainly in the shape, the guided sample
should draw the prompted shape more often. The 'null' row is the plain sampler on the same
held-out captions and seeds; 'cond' is no guidance at all (scale 1), what a negative equal to
the caption would give: the swap row against it says whether the shape difference the guidance
amplifies points toward the shape.

  python experiments/shape_guidance.py --workdir=sora_jax/assets/demo/t2v --num=128 \
      --negatives=null,cond,swap,drop --out=experiments/results/shape_by_noise/s39

Writes shape_guidance.json and prints one row per negative.
"""
from __future__ import annotations

import argparse
import json
import os
import re

import jax
import jax.numpy as jnp
import numpy as np

from sora_jax.data.world.captions import SHAPE_WORDS
from sora_jax.eval import t2v_eval
from sora_jax.eval import worlds as world_eval
from sora_jax.io.video import to_uint8
from sora_jax.models import text_encoder as text_lib

SWAP = {"circle": "square", "square": "circle", "triangle": "square", "star": "square"}


def negative_caption(caption: str, kind: str) -> str:
  """The caption with every shape word (any of the world's synonyms: 'ball', 'block', ...)
  swapped for the other shape's name ('swap') or removed ('drop')."""
  shape_of = {w: s for s, ws in SHAPE_WORDS.items() for w in ws}
  pattern = r"\b(" + "|".join(shape_of) + r")\b"
  if not re.search(pattern, caption):
    raise ValueError(f"no shape word in {caption!r}")
  if kind == "swap":
    return re.sub(pattern, lambda m: SWAP[shape_of[m.group(1)]], caption)
  return re.sub(pattern + " ?", "", caption)


def sample(t2v, captions: list[str], kind: str, seed: int, batch: int = 8) -> list[np.ndarray]:
  system = t2v.system
  # 'cond': no guidance, what a negative that differed from the caption in nothing would give
  scale = 1.0 if kind == "cond" else None
  run = jax.jit(lambda p, tok, m, neg, rng: system.decode(
      system.sample_latents(p, tok, m, rng, negative=neg, guidance_scale=scale)))
  videos = []
  for i in range(0, len(captions), batch):
    chunk = captions[i:i + batch]
    tokens, mask = system.encode_prompts(chunk)
    neg = (text_lib.null_text(len(chunk), tokens.shape[1]) if kind in ("null", "cond") else
           system.encode_prompts([negative_caption(c, kind) for c in chunk]))
    out = run(t2v.params, jnp.asarray(tokens), jnp.asarray(mask),
              tuple(jnp.asarray(a) for a in neg), jax.random.key(seed + i))
    videos.extend(to_uint8(np.asarray(out)))
  return videos


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--workdir", required=True)
  ap.add_argument("--num", type=int, default=128)
  ap.add_argument("--split", default="test")
  ap.add_argument("--negatives", default="null,cond,swap,drop")
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--out", default="experiments/results/shape_guidance")
  a = ap.parse_args()
  from sora_jax.pipeline import TextToVideo
  t2v = TextToVideo.from_workdir(a.workdir, on_long="warn")
  captions = t2v_eval.held_out_captions(t2v.config.data, a.split, a.num)
  fps = float(t2v.config.data.fps)
  rows = []
  for kind in a.negatives.split(","):
    scored = [world_eval.score_video(v, c, fps)
              for v, c in zip(sample(t2v, captions, kind, a.seed), captions)]
    rows.append({"negative": kind, "adherence": world_eval.mean_scores(scored),
                 "shape_by_shape": t2v_eval.score_by_word(scored, captions, "shape", "shape")})
    s = rows[-1]["adherence"]
    print(f"{kind:5s} colour {s['color']:.3f} direction {s['direction']:.3f} "
          f"shape {s['shape']:.3f}", json.dumps(rows[-1]["shape_by_shape"]), flush=True)
  os.makedirs(a.out, exist_ok=True)
  with open(os.path.join(a.out, "shape_guidance.json"), "w") as f:
    json.dump({"workdir": a.workdir, "num": a.num, "split": a.split, "seed": a.seed,
               "rows": rows}, f, indent=2)


if __name__ == "__main__":
  main()
