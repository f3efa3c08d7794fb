"""Study: at which noise level does a trained text-to-video model lose the prompted shape?

Held-out world clips, noised to t = strength and denoised under their own captions (SDEdit,
`TextToVideo.edit_video`), scored by the world evaluator shape by shape. Strength 1 is
text-to-video from noise; the 'ground truth' row (the clips themselves: the evaluator's own
ceiling) and the 'reconstruction' row (the VAE alone) are the ceilings, and every row also counts
the frames read as each shape (what a lost circle turned into). If a circle
survives from t = 0.6 but not from 1, the shape is decided early in sampling (where the caption
and the layout decide the clip); if it is lost even from t = 0.2, the model's low-noise denoiser
draws it wrong and more training near the data is the lever.

  python experiments/shape_by_noise.py --workdir=sora_jax/assets/demo/t2v --num=32 \
      --strengths=0.2,0.4,0.6,0.8,1.0 --out=experiments/results/shape_by_noise

Writes table.md and metrics.json.
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np

from sora_jax.eval import t2v_eval
from sora_jax.eval import worlds as world_eval
from sora_jax.io.video import to_uint8


def _row(name, videos, captions, fps) -> dict:
  scored = [world_eval.score_video(v, c, fps) for v, c in zip(videos, captions, strict=True)]
  return {"from": name, "adherence": world_eval.mean_scores(scored),
          "shape_by_shape": t2v_eval.score_by_word(scored, captions, "shape", "shape"),
          "read_as": read_as(videos, captions)}


def read_as(videos, captions) -> dict[str, dict[str, int]]:
  """{prompted shape: {shape the evaluator reads: frames}} over the frames that show the
  prompted colour: what a lost shape turned into (a circle drawn as a square, say)."""
  counts: dict[str, dict[str, int]] = {}
  for v, c in zip(videos, captions, strict=True):
    desc = world_eval.parse_caption(c)
    det = world_eval.detect(v, desc["color"])
    row = counts.setdefault(str(desc["shape"]), {})
    for t in np.nonzero(det["visible"])[0]:
      got = world_eval.classify_shape(det["mask"][t])
      row[got] = row.get(got, 0) + 1
  return counts


def study(t2v, *, num: int, strengths: list[float], split: str = "test",
          num_steps: int | None = None, guidance_scale: float | None = None,
          seed: int = 0) -> list[dict]:
  """One row for the clips themselves (the evaluator's own ceiling), one for the VAE's
  reconstructions, then one per strength, on the same `num` clips."""
  clips = list(t2v_eval._held_out(t2v.config.data, split, num))  # pylint: disable=protected-access
  captions = [str(b["caption"][0]) for b in clips]
  videos = [np.asarray(b["video"][0]) for b in clips]
  fps = float(t2v.config.data.fps)
  recon = []
  for v in videos:
    lat = t2v.encode(v)[None]
    recon.append(to_uint8(np.asarray(t2v.system.decode(lat))[0]))
  rows = [_row("ground truth", [to_uint8(v) for v in videos], captions, fps),
          _row("reconstruction", recon, captions, fps)]
  for s in strengths:
    out = [t2v.edit_video(c, v, strength=s, num_steps=num_steps, guidance_scale=guidance_scale,
                          seed=seed + i) for i, (c, v) in enumerate(zip(captions, videos))]
    rows.append(_row(f"t = {s:g}", out, captions, fps))
    print(json.dumps({k: rows[-1][k] for k in ("from", "shape_by_shape")}))
  return rows


def table(rows: list[dict]) -> str:
  shapes = sorted({s for r in rows for s in r["shape_by_shape"]})
  head = ["denoised from", "colour", "direction", "shape"] + [f"shape: {s}" for s in shapes]
  lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
  for r in rows:
    a = r["adherence"]
    cells = [r["from"]] + [f"{a[k]:.2f}" for k in ("color", "direction", "shape")]
    cells += [f"{r['shape_by_shape'][s][0]:.2f}" if s in r["shape_by_shape"] else ""
              for s in shapes]
    lines.append("| " + " | ".join(cells) + " |")
  lines += ["", "Frames read as " + " / ".join(world_eval.SHAPES) + ", by prompted shape:", "",
            "| denoised from | " + " | ".join(shapes) + " |", "|---|" + "---|" * len(shapes)]
  for r in rows:
    cells = [" / ".join(str(r["read_as"].get(s, {}).get(g, 0)) for g in world_eval.SHAPES)
             for s in shapes]
    lines.append(f"| {r['from']} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--workdir", required=True)
  ap.add_argument("--num", type=int, default=32)
  ap.add_argument("--split", default="test")
  ap.add_argument("--strengths", default="0.2,0.4,0.6,0.8,1.0")
  ap.add_argument("--steps", type=int, default=None, help="sampling steps (default: the run's)")
  ap.add_argument("--guidance", type=float, default=None, help="CFG (default: the run's)")
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--out", default="experiments/results/shape_by_noise")
  a = ap.parse_args()
  from sora_jax.pipeline import TextToVideo
  t2v = TextToVideo.from_workdir(a.workdir, on_long="warn")
  rows = study(t2v, num=a.num, strengths=[float(s) for s in a.strengths.split(",") if s],
               split=a.split, num_steps=a.steps, guidance_scale=a.guidance, seed=a.seed)
  os.makedirs(a.out, exist_ok=True)
  with open(os.path.join(a.out, "metrics.json"), "w") as f:
    json.dump({"workdir": a.workdir, "num": a.num, "split": a.split, "rows": rows}, f, indent=2)
  text = table(rows)
  with open(os.path.join(a.out, "table.md"), "w") as f:
    f.write(f"`{a.workdir}`, {a.num} {a.split} clips denoised under their own short captions, "
            f"seed {a.seed}\n\n" + text)
  print(text)


if __name__ == "__main__":
  main()
