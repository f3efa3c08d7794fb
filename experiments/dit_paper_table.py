"""The DiT paper's Table 4 (Peebles & Xie, 2023): parameters and GMACs of S/B/L/XL x /2 /4 /8.

  python experiments/dit_paper_table.py            # formula only (instant)
  python experiments/dit_paper_table.py --xla      # also XLA's own count (compiles 24 small HLOs)

Each row is configs/dit_paper.py:variant=V at 256x256 (32x32x4 latents), counted by
sora_jax.eval.flops beside the paper's numbers. The paper's "Gflops" are multiply-accumulates of
one forward pass (DiT-XL/2: 118.6). Its parameter counts are the reference implementation's
`sum(p.numel())`, which includes the fixed sin-cos position table (an nn.Parameter there, a
constant here): the `params_ref` column adds it back, so it compares like with like; it equals
the count re-derived from the reference's module list for all 12 models, to the parameter
(tests/models/test_dit_paper.py; DiT-XL/2: 675,129,632). The paper rounds to one value per size
(33, 130, 458, 675 M), so that column is compared within 1 %, as are the GMACs. Writes
experiments/results/dit_paper/table.{json,md}.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import dit_paper  # noqa: E402
from experiments._plots import write_table  # noqa: E402
from sora_jax.eval import flops  # noqa: E402

# Table 4 of the paper: Gflops (MACs) per forward pass at 256x256.
PAPER_GMACS = {
    "S/8": 0.36, "S/4": 1.41, "S/2": 6.06,
    "B/8": 1.42, "B/4": 5.56, "B/2": 23.01,
    "L/8": 5.01, "L/4": 19.70, "L/2": 80.71,
    "XL/8": 7.39, "XL/4": 29.05, "XL/2": 118.64,
}
# Table 1 (and the reference's model zoo): parameters in millions, one value per size.
PAPER_PARAMS_M = {"S": 33, "B": 130, "L": 458, "XL": 675}
VARIANTS = tuple(PAPER_GMACS)


def row_for(variant: str, xla: bool = False) -> dict:
  config = dit_paper.get_config(f"variant={variant}")
  r = flops.flops_report(config, xla=xla)[0]
  size = variant.split("/")[0]
  params_ref = r["params"] + r["tokens"] * r["width"]  # + the reference's fixed pos-embed
  out = {
      "model": f"DiT-{variant}", "tokens": r["tokens"], "params": r["params"],
      "params_ref": params_ref, "paper_params_m": PAPER_PARAMS_M[size],
      "params_diff_pct": 100.0 * (params_ref / 1e6 / PAPER_PARAMS_M[size] - 1.0),
      "gmacs": r["gmacs_formula"], "paper_gmacs": PAPER_GMACS[variant],
  }
  out["gmacs_diff_pct"] = 100.0 * (out["gmacs"] / out["paper_gmacs"] - 1.0)
  if xla:
    out["gmacs_xla"] = r["gmacs_xla"]
    out["xla_diff_pct"] = 100.0 * (r["gmacs_xla"] / out["paper_gmacs"] - 1.0)
  return out


def table_md(rows: list[dict]) -> str:
  xla = "gmacs_xla" in rows[0]
  head = ["model", "tokens", "params (ref.)", "paper (M)", "diff %", "GMACs", "paper", "diff %"]
  head += ["GMACs (XLA)", "diff %"] if xla else []
  lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
  for r in rows:
    cells = [r["model"], str(r["tokens"]), f"{r['params_ref']:,}",
             str(r["paper_params_m"]), f"{r['params_diff_pct']:+.2f}", f"{r['gmacs']:.2f}", f"{r['paper_gmacs']:.2f}",
             f"{r['gmacs_diff_pct']:+.2f}"]
    if xla:
      cells += [f"{r['gmacs_xla']:.2f}", f"{r['xla_diff_pct']:+.2f}"]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--variants", default=",".join(VARIANTS))
  ap.add_argument("--xla", action="store_true", help="also XLA's count (compiles each model)")
  ap.add_argument("--out", default="experiments/results/dit_paper")
  a = ap.parse_args(argv)
  names = [v.strip() for v in a.variants.split(",") if v.strip()]
  unknown = [n for n in names if n not in PAPER_GMACS]
  if unknown:
    ap.error(f"unknown --variants {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
  rows = [row_for(v, a.xla) for v in names]
  os.makedirs(a.out, exist_ok=True)
  write_table(a.out, rows, table_md(rows))
  bad = [r["model"] for r in rows
         if abs(r["params_diff_pct"]) > 1.0 or abs(r["gmacs_diff_pct"]) > 1.0]
  if bad:
    print(f"more than 1 % from the paper: {bad}")
  return 1 if bad else 0


if __name__ == "__main__":
  sys.exit(main())
