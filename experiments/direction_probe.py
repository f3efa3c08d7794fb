"""Does the direction word change the video? Same noise, only the word differs.

  python experiments/direction_probe.py --workdirs=NAME=WORKDIR[,NAME=WORKDIR...] [--seeds=16] \
      [--out=experiments/results/direction_probe]

For each phrasing of a sideways / vertical motion in the world's own words ("slides to the
right", "bounces upward", ...), one colour and shape, the same `--seeds` noise draws: where the
object starts (frame 0 centroid along the motion's axis, 0 = left / top edge, 1 = right / bottom)
and how far it has moved by frame 6 along that axis (frame widths / heights; > 0 = right / down),
and the evaluator's direction score. A model that reads the word starts and moves its objects
differently for "right" and "left" from the same noise; one that does not gives the same rows.

The same question for where-words: `placement` samples the world's detailed caption with only
"It starts near the <place> of the frame." changed (the world's own clips start ~0.25 of the
frame apart between left and right), and `t1_spread` asks the model for its clean-clip guess
x0 = x - t v at t = 1 (pure noise), where the ideal guess is the caption's mean clip, the same
for every noise: seed variance over prompt variance there says how much of the layout the noise,
not the caption, decides. A run with model.layout_prior also gets the placement of its prior's
own clean clip (decoded), which says whether the caption's layout was learnt at all. Writes table.json, table.md and command.txt.
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

from sora_jax import runs  # noqa: E402
from sora_jax.eval import worlds as world_eval  # noqa: E402
from sora_jax.pipeline import TextToVideo  # noqa: E402
from sora_jax.systems.vae import to_uint8  # noqa: E402

PHRASES = (("slides to the right", 0), ("slides to the left", 0), ("slides rightward", 0),
           ("slides leftward", 0), ("bounces to the right", 0), ("bounces to the left", 0),
           ("bounces upward", 1), ("bounces downward", 1))


def probe(t2v, subject: str, seeds: int) -> list[dict]:
  color = world_eval.parse_caption(f"a {subject}")["color"]
  rows = []
  for phrase, axis in PHRASES:
    prompt = f"a {subject} {phrase}"
    videos = t2v([prompt] * seeds, seed=0)
    start, moved, score = [], [], []
    for v in videos:
      det = world_eval.detect(v, color)
      idx = np.nonzero(det["visible"])[0]
      score.append(world_eval.score_video(v, prompt)["direction"])
      if len(idx) >= 2:
        c = det["centroid"][idx]
        start.append(float(c[0, axis]))
        moved.append(float(c[min(6, len(c) - 1), axis] - c[0, axis]))
    rows.append({"prompt": prompt, "start": float(np.mean(start)) if start else float("nan"),
                 "moved": float(np.mean(moved)) if moved else float("nan"),
                 "moved_positive": float(np.mean(np.array(moved) > 0)) if moved else float("nan"),
                 "direction": float(np.mean(score)), "tracked": len(moved)})
  return rows


PLACES = ("left side", "right side", "upper middle", "lower middle", "centre")
DETAILED = ("A large {subject} shrinks. It starts near the {place} of the frame. It shrinks to less "
            "than half its size. The scene is set against a dark gradient backdrop.")
T1_PROMPTS = ("a red square slides to the right", "a blue circle falls", "a green star grows",
              "a yellow triangle bounces to the left", "a white square shrinks",
              "a cyan circle orbits clockwise", "a magenta star bounces upward",
              "an orange triangle spins")


def placement(t2v, subject: str, seeds: int) -> list[dict]:
  """Mean frame-0 centroid (x, y as fractions of the frame) per place word, same noise."""
  color = world_eval.parse_caption(f"a {subject}")["color"]
  rows = []
  for place in PLACES:
    xs, ys = [], []
    for v in t2v([DETAILED.format(subject=subject, place=place)] * seeds, seed=0):
      det = world_eval.detect(v, color)
      idx = np.nonzero(det["visible"])[0]
      if len(idx):
        xs.append(float(det["centroid"][idx[0], 0]))
        ys.append(float(det["centroid"][idx[0], 1]))
    rows.append({"place": place, "x": float(np.mean(xs)) if xs else float("nan"),
                 "y": float(np.mean(ys)) if ys else float("nan"), "tracked": len(xs)})
  return rows


def prior_placement(t2v, subject: str) -> list[dict]:
  """model.layout_prior: placement()'s rows for the prior's own clean clip (decoded; no noise).
  The prior is an expectation, a soft blob the colour tracker's threshold misses, so its place
  is the frame-0 centroid weighted by each pixel's distance from the frame's median colour."""
  system, params = t2v.system, t2v.params
  prompts = [DETAILED.format(subject=subject, place=place) for place in PLACES]
  tokens, mask = system.encode_prompts(prompts)
  video = jax.jit(lambda p, tk, m: system.decode(system.layout_prior(p, tk, m)))(
      params, jnp.asarray(tokens), jnp.asarray(mask))
  rows = []
  for place, v in zip(PLACES, to_uint8(video)):
    frame = v[0].astype(np.float32)
    weight = np.linalg.norm(frame - np.median(frame.reshape(-1, 3), 0), axis=-1)
    h, w = weight.shape
    total = float(weight.sum()) or 1.0
    rows.append({"place": place, "x": float((weight.sum(0) * (np.arange(w) + 0.5)).sum()
                                             / (w * total)),
                 "y": float((weight.sum(1) * (np.arange(h) + 0.5)).sum() / (h * total))})
  return rows


def t1_spread(t2v, seeds: int, ts=(1.0, 0.99, 0.97, 0.9)) -> list[dict]:
  """Seed and prompt variance of the model's clean-clip guess from scaled pure noise t * eps."""
  system, params = t2v.system, t2v.params
  shape = tuple(system.latent_shape)
  tokens, mask = system.encode_prompts([p for p in T1_PROMPTS for _ in range(seeds)])
  cond = (system._context(params, jnp.asarray(tokens), jnp.asarray(mask)), jnp.asarray(mask))
  noise = jnp.tile(jax.random.normal(jax.random.key(0), (seeds, *shape)),
                   (len(T1_PROMPTS),) + (1,) * len(shape))
  fn = jax.jit(system.model_fn(params))
  rows = []
  for t in ts:
    x = noise * t
    x0 = np.asarray(x - t * fn(x, jnp.full((len(x),), t), cond)).reshape(len(T1_PROMPTS),
                                                                        seeds, -1)
    seed_var, prompt_var = float(x0.var(1).mean()), float(x0.mean(1).var(0).mean())
    rows.append({"t": t, "seed_var": seed_var, "prompt_var": prompt_var,
                 "ratio": seed_var / max(prompt_var, 1e-12)})
  return rows


def text_separation(t2v, subject: str) -> list[dict]:
  """How much the caption features the DiT reads (the encoder's output through its text
  projections) change when one word of a detailed caption is swapped — the place word, then
  the colour — at that word, at the other words (mean), and pooled; relative to the first
  caption's norms."""
  system, params = t2v.system, t2v.params
  color, rest = subject.split(" ", 1)
  other = "blue" if color != "blue" else "red"
  left = DETAILED.format(subject=subject, place="left side")
  pairs = (("left/right", left, DETAILED.format(subject=subject, place="right side")),
           (f"{color}/{other}", left, DETAILED.format(subject=f"{other} {rest}",
                                                      place="left side")))
  rows = []
  for swap, a, b in pairs:
    tokens, mask = system.encode_prompts([a, b])
    ctx = system._context(params, jnp.asarray(tokens), jnp.asarray(mask))
    n = int(mask[0].sum())
    f = np.asarray(_projected_context(params["dit"], ctx))[:, :n]
    rel = np.linalg.norm(f[0] - f[1], axis=-1) / np.linalg.norm(f[0], axis=-1)
    at = np.nonzero(tokens[0, :n] != tokens[1, :n])[0]
    if not len(at):   # the caption was cut before the word (a short text.max_len)
      rows.append({"swap": swap, "cut": True, "at_word": float("nan"),
                   "other_words": float("nan"), "pooled": float("nan")})
      continue
    pooled = f.mean(1)
    rows.append({"swap": swap, "cut": False, "at_word": float(rel[at].mean()),
                 "other_words": float(np.delete(rel, at).mean()),
                 "pooled": float(np.linalg.norm(pooled[0] - pooled[1])
                                 / np.linalg.norm(pooled[0]))})
  return rows


def _projected_context(dit_params, ctx):
  p1, p2 = dit_params["text_proj1"], dit_params["text_proj2"]
  h = jax.nn.gelu(ctx @ p1["kernel"] + p1["bias"], approximate=True)
  return h @ p2["kernel"] + p2["bias"]


def table_md(results: dict) -> str:
  out = ["| run | prompt | start | moved by frame 6 | share moving right / down | direction |",
         "|---|---|---:|---:|---:|---:|"]
  for name, rows in results.items():
    for r in rows:
      out.append(f"| {name} | {r['prompt']} | {r['start']:.2f} | {r['moved']:+.3f} | "
                 f"{r['moved_positive']:.2f} | {r['direction']:.2f} |")
  return "\n".join(out) + "\n"


def separation_md(seps: dict) -> str:
  out = ["| run | swap | change at the word | at the other words | pooled |", "|---|---|---:|---:|---:|"]
  for name, rows in seps.items():
    out += [f"| {name} | {r['swap']} | {r['at_word']:.2f} | {r['other_words']:.2f} | "
            f"{r['pooled']:.2f} |" for r in rows]
  return "\n".join(out) + "\n"


def layout_md(places: dict, spreads: dict) -> str:
  out = ["| run | " + " | ".join(f"{p}: x, y" for p in PLACES) + " |",
         "|---|" + "---:|" * len(PLACES)]
  for name, rows in places.items():
    out.append(f"| {name} | " + " | ".join(f"{r['x']:.2f}, {r['y']:.2f}" for r in rows) + " |")
  ts = [r["t"] for r in next(iter(spreads.values()))]
  out += ["", "| run | " + " | ".join(f"seed / prompt variance at t={t:g}" for t in ts) + " |",
          "|---|" + "---:|" * len(ts)]
  for name, rows in spreads.items():
    out.append(f"| {name} | " + " | ".join(f"{r['ratio']:.2f}" for r in rows) + " |")
  return "\n".join(out) + "\n"


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--workdirs", required=True, help="NAME=WORKDIR[,NAME=WORKDIR...]")
  ap.add_argument("--subject", default="red square")
  ap.add_argument("--seeds", type=int, default=16)
  ap.add_argument("--prior_strength", type=float, default=None,
                  help="config.sample.layout_prior_strength (runs with model.layout_prior)")
  ap.add_argument("--out", default="experiments/results/direction_probe")
  a = ap.parse_args()
  os.makedirs(a.out, exist_ok=True)
  with open(os.path.join(a.out, "command.txt"), "w") as f:
    f.write("python " + " ".join(sys.argv) + "\n")
  results, places, spreads, seps = {}, {}, {}, {}
  for name, w in (item.split("=", 1) for item in a.workdirs.split(",")):
    has_prior = runs.load_config(w).model.get("layout_prior", False)
    t2v = TextToVideo.from_workdir(w, on_long="warn", sample={
        "layout_prior_strength": a.prior_strength if has_prior else None})
    results[name] = probe(t2v, a.subject, a.seeds)
    places[name] = placement(t2v, a.subject, a.seeds)
    if t2v.system.config.model.get("layout_prior", False):
      places[f"{name} (its layout prior)"] = prior_placement(t2v, a.subject)
    spreads[name] = t1_spread(t2v, min(a.seeds, 8))
    seps[name] = text_separation(t2v, a.subject)
  write_table(a.out, {"direction": results, "placement": places, "t1_spread": spreads,
                      "text_separation": seps},
              table_md(results) + "\n" + layout_md(places, spreads) + "\n" + separation_md(seps))


if __name__ == "__main__":
  main()
