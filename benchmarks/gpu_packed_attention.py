"""cuDNN's packed (THD) attention layout for packed rows, checked and timed on one GPU (Hopper+).

  python benchmarks/gpu_packed_attention.py [--quick] [--cpu-dry-run] [--budget-s 200]

(a) Correctness, B=2 rows of clips of different lengths and padding, 6 heads x 64, bf16, for
    self-attention and text cross-attention (queries packed, keys = caption slots with masks):
    impl='cudnn' with max_segments (packed) against each clip alone through impl='cudnn' (no
    segments), against impl='xla' with segment ids in float32, and against cudnn's dense-mask path;
    forward and dq/dk/dv by jax.vjp with a cotangent on valid tokens only, compared on valid tokens
    as ||out - ref|| / ||ref||. Padding and masked caption tokens are poisoned with large values (a
    leak shows), and every output and gradient must be finite, padding included. A raw probe calls
    the private kernel directly, padding in no segment, with mask types PADDING and NO_MASK, and
    reports what it leaves in the padding rows of out and dq (why attention.py overwrites them).
(b) Median forward and forward+backward ms (after warm-up, >= 10 reps) and memory (compiled temp
    bytes; the device's running peak) of cudnn-packed vs cudnn-dense-mask vs xla-mask at 4k, 16k,
    32k tokens per row (B=1, 8 clips), plus cudnn-packed with a loose bound (max_segments=64).

One process; each case in try/except, so one failure still reports the rest; cases past the time
budget are skipped. Prints a table last; writes JSON lines to $OUT/packed_attention.jsonl when OUT
is set. Imports jax, numpy and sora_jax.models.attention only. --cpu-dry-run runs the same logic
at tiny sizes on CPU: every cudnn call is traced and lowered for CUDA, then run with cuDNN
emulated in jnp, so all the checks and the table execute (their numbers mean nothing there).
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import re
import statistics
import sys
import time
import traceback

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from sora_jax.models import attention as A  # noqa: E402

POISON = 30.0   # padding / masked-caption q, k, v: any leak into a valid token is visible
RECORDS: list[dict] = []
T0 = time.perf_counter()


def emit(rec: dict) -> None:
  RECORDS.append(rec)
  out = os.environ.get("OUT")
  if out:
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "packed_attention.jsonl"), "a") as f:
      f.write(json.dumps(rec, default=str) + "\n")
  print(json.dumps(rec, default=str), flush=True)


def guarded(kind: str, name: str, budget_s: float, fn, **meta) -> None:
  """Runs one case; records its result, its error, or that the time budget skipped it."""
  if time.perf_counter() - T0 > budget_s:
    emit({"kind": kind, "case": name, **meta, "status": "skipped (time budget)"})
    return
  t = time.perf_counter()
  try:
    rec = fn()
    emit({"kind": kind, "case": name, **meta, **rec, "wall_s": round(time.perf_counter() - t, 1)})
  except Exception as e:  # noqa: BLE001 - one failing case must not hide the others
    emit({"kind": kind, "case": name, **meta, "status": "error",
          "error": f"{type(e).__name__}: {str(e)[:600]}",
          "where": traceback.format_exc().strip().splitlines()[-3:]})
  gc.collect()


# ------------------------------------------------------------------------------ packed rows


def rows_from_lengths(lengths: list[list[int]], t: int) -> np.ndarray:
  """Clips 1..n as contiguous runs of the given lengths, then padding (id 0) to t tokens."""
  ids = np.zeros((len(lengths), t), np.int32)
  for i, row in enumerate(lengths):
    ids[i, :sum(row)] = np.repeat(np.arange(1, len(row) + 1), row)
  return ids


def captions(rng, ids: np.ndarray, slots: int, L: int):
  """Slot j holds clip j + 1 (0 when empty), valid tokens left-aligned; an empty slot reads its
  first token, as T2VSystem._packed_context makes it. Returns (ids [B, slots*L], mask, lengths)."""
  b = ids.shape[0]
  seg, mask = np.zeros((b, slots * L), np.int32), np.zeros((b, slots * L), bool)
  lens = np.zeros((b, slots), np.int32)
  for i in range(b):
    n = int(ids[i].max())
    for j in range(slots):
      lens[i, j] = rng.randint(max(1, L // 4), L + 1) if j < n else 1
      seg[i, j * L:(j + 1) * L] = j + 1 if j < n else 0
      mask[i, j * L:j * L + lens[i, j]] = True
  return seg, mask, lens


def clip_spans(ids: np.ndarray):
  """(row, start, end, clip index) of every clip."""
  out = []
  for b in range(ids.shape[0]):
    for c in range(1, int(ids[b].max()) + 1):
      where = np.nonzero(ids[b] == c)[0]
      out.append((b, int(where[0]), int(where[-1]) + 1, c - 1))
  return out


def qkv(rng, shape, dtype, poison_rows=None):
  x = jnp.asarray(rng.randn(*shape), jnp.float32)
  if poison_rows is not None:
    x = jnp.where(jnp.asarray(poison_rows)[:, :, None, None], POISON, x)
  return x.astype(dtype)


def rel(a, b, rows) -> float:
  """||a - b|| / ||b|| over the rows (a [B, N] bool) that count."""
  m = jnp.asarray(rows)[:, :, None, None]
  a, b = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
  return float(jnp.linalg.norm(jnp.where(m, a - b, 0)) / jnp.maximum(
      jnp.linalg.norm(jnp.where(m, b, 0)), 1e-30))


def finite(*xs) -> bool:
  return all(bool(jnp.isfinite(jnp.asarray(x, jnp.float32)).all()) for x in xs)


def attn_vjp(attn, q, k, v, g):
  out, vjp = jax.vjp(attn, q, k, v)
  return (out, *vjp(g))


# ------------------------------------------------------------------------------ (a) correctness


def kernel_kind(text: str) -> str:
  """Which cuDNN attention a lowered module calls: the packed layout (max_seg_per_batch > 1), a
  dense bias/mask, or plain; so a silent fallback to the dense mask cannot pass as packed."""
  text = text.replace("\\22", '"')
  segs = sorted({int(m) for m in re.findall(r'"max_seg_per_batch":\s*(\d+)', text)} - {1})
  calls = sorted(set(re.findall(r"__cudnn\$(fmha\w+)", text)))
  return (f"packed M={segs} " if segs else "") + ",".join(calls) if calls else "no cuDNN call"


def lowered_kind(fn, *args) -> str:
  return kernel_kind(jax.jit(fn).trace(*args).lower(lowering_platforms=("cuda",)).as_text())


def run_or_lower(fn, *args, dry: bool):
  """Runs fn jitted. In the dry run, lowers it for CUDA with the real kernels first, then runs it
  on CPU with the kernels emulated (`emulated_cudnn`), so the checks below execute too."""
  if not dry:
    return jax.jit(fn)(*args)
  text = jax.jit(fn).trace(*args).lower(lowering_platforms=("cuda",)).as_text()
  assert "__cudnn$fmha" in text, "no cuDNN custom call in the lowered module"
  with emulated_cudnn():
    return jax.jit(lambda *a: fn(*a))(*args)   # a new function: not the CUDA trace from the cache


class emulated_cudnn:  # noqa: N801 - a context manager used like a function
  """Dry run only: cuDNN's kernels in plain jnp on CPU. The packed one attends within the ranges
  and leaves NaN in the rows of out/dq/dk/dv outside every range, as undefined memory may be."""

  def __enter__(self):
    from jax._src.cudnn import fused_attention_stablehlo as fused
    self.saved = fused.dot_product_attention, jax.nn.dot_product_attention
    nn_attention = self.saved[1]

    def dense(q, k, v, bias=None, mask=None, *, implementation=None, **kw):
      return nn_attention(q, k, v, bias, mask, implementation=None, **kw)

    def packed(q, k, v, *, q_seqlen, kv_seqlen, q_offsets, kv_offsets, scale, mask_type, **kw):
      del scale, mask_type, kw
      i, j = jnp.arange(q.shape[1])[None, :, None], jnp.arange(k.shape[1])[None, :, None]
      inq = (q_offsets[:, None, :-1] <= i) & (i < q_offsets[:, None, :-1] + q_seqlen[:, None])
      ink = (kv_offsets[:, None, :-1] <= j) & (j < kv_offsets[:, None, :-1] + kv_seqlen[:, None])
      m = jnp.einsum("btm,bsm->bts", inq.astype(jnp.int32), ink.astype(jnp.int32)) > 0
      rq, rk = m.any(-1)[..., None, None], m.any(1)[..., None, None]

      @jax.custom_vjp
      def kernel(q, k, v):
        return fwd(q, k, v)[0]

      def fwd(q, k, v):
        out, vjp = jax.vjp(lambda q, k, v: A.xla_attention(q, k, v, m[:, None]), q, k, v)
        return jnp.where(rq, out, jnp.nan), vjp

      def bwd(vjp, g):
        dq, dk, dv = vjp(g)
        return jnp.where(rq, dq, jnp.nan), jnp.where(rk, dk, jnp.nan), jnp.where(rk, dv, jnp.nan)

      kernel.defvjp(fwd, bwd)
      return kernel(q, k, v)

    fused.dot_product_attention, jax.nn.dot_product_attention = packed, dense
    self.fused = fused
    return self

  def __exit__(self, *exc):
    self.fused.dot_product_attention, jax.nn.dot_product_attention = self.saved


def correctness(cfg, rng, cross: bool):
  dry = cfg.cpu_dry_run
  b, t, h, d = 2, cfg.t_check, cfg.heads, cfg.head_dim
  ids = rows_from_lengths(cfg.clip_lengths, t)
  m = int(ids.max(axis=1).max()) + 1                       # clips + padding's run
  valid_q = ids > 0
  q = qkv(rng, (b, t, h, d), jnp.bfloat16, ~valid_q)
  if cross:
    slots, L = m - 1, cfg.text_len
    seg, mask, _ = captions(rng, ids, slots, L)
    valid_k = mask & (seg > 0)
    k, v = (qkv(rng, (b, slots * L, h, d), jnp.bfloat16, ~mask) for _ in range(2))
    kw = dict(mask=jnp.asarray(mask), segment_ids=jnp.asarray(ids),
              kv_segment_ids=jnp.asarray(seg))
  else:
    valid_k = valid_q
    k, v = (qkv(rng, (b, t, h, d), jnp.bfloat16, ~valid_q) for _ in range(2))
    kw = dict(segment_ids=jnp.asarray(ids))
  g = jnp.where(jnp.asarray(valid_q)[:, :, None, None],
                jnp.asarray(rng.randn(b, t, h, d), jnp.float32), 0).astype(jnp.bfloat16)

  def method(impl, bound=None, dtype=jnp.bfloat16):
    def f(q, k, v, g):
      attn = lambda q, k, v: A.dot_product_attention(  # noqa: E731
          q, k, v, impl=impl, max_segments=bound, **kw)
      return attn_vjp(attn, *(x.astype(dtype) for x in (q, k, v)), g.astype(dtype))
    return f

  ref = jax.jit(method("xla", dtype=jnp.float32))(q, k, v, g)       # out, dq, dk, dv
  rec = {"T": t, "max_segments": m, "clips": [len(r) for r in cfg.clip_lengths]}
  rec["packed_kernel"] = lowered_kind(method("cudnn", m), q, k, v, g)
  rec["dense_kernel"] = lowered_kind(method("cudnn"), q, k, v, g)
  packed = run_or_lower(method("cudnn", m), q, k, v, g, dry=dry)
  dense = run_or_lower(method("cudnn"), q, k, v, g, dry=dry)

  # each clip alone through cuDNN without segments (cross: its caption slot under a key mask)
  alone = [np.zeros((b, t, h, d), np.float32), np.zeros((b, t, h, d), np.float32),
           np.zeros(k.shape, np.float32), np.zeros(v.shape, np.float32)]

  def clip_alone(q, k, v, g, key_mask=None):   # one function: same shapes compile once
    return attn_vjp(lambda q, k, v: A.dot_product_attention(q, k, v, impl="cudnn", mask=key_mask),
                    q, k, v, g)

  for row, a, e, c in clip_spans(ids):
    ks = slice(c * L, (c + 1) * L) if cross else slice(a, e)
    extra = (jnp.asarray(mask[row:row + 1, ks]),) if cross else ()
    res = run_or_lower(clip_alone, q[row:row + 1, a:e], k[row:row + 1, ks], v[row:row + 1, ks],
                       g[row:row + 1, a:e], *extra, dry=dry)
    alone[0][row, a:e], alone[1][row, a:e] = np.asarray(res[0][0], np.float32), np.asarray(
        res[1][0], np.float32)
    alone[2][row, ks] += np.asarray(res[2][0], np.float32)
    alone[3][row, ks] += np.asarray(res[3][0], np.float32)
  rec["finite_xla32"] = finite(*ref)
  tol = {"out": cfg.tol, "dq": 2 * cfg.tol, "dk": 2 * cfg.tol, "dv": 2 * cfg.tol}
  rows = {"out": valid_q, "dq": valid_q, "dk": valid_k, "dv": valid_k}
  ok = finite(*packed)
  rec["finite_packed_all_rows"] = ok
  ok &= rec["packed_kernel"].startswith(f"packed M=[{m}]")
  for i, name in enumerate(("out", "dq", "dk", "dv")):
    for other, arrs in (("xla32", ref), ("alone", alone), ("dense", dense)):
      err = rel(packed[i], arrs[i], rows[name])
      rec[f"{name}_vs_{other}"] = round(err, 5)
      ok &= err < tol[name]
  rec["pad_out_max_abs"] = float(jnp.max(jnp.abs(jnp.where(
      jnp.asarray(valid_q)[:, :, None, None], 0, packed[0].astype(jnp.float32)))))
  rec["status"] = ("PASS" if ok else "FAIL") + (" (dry run: emulated cudnn)" if dry else "")
  return rec


def raw_probe(cfg, rng):
  """The private kernel with padding in no segment: what is in the padding rows of out and dq?"""
  from jax._src.cudnn import fused_attention_stablehlo as fused
  b, t, h, d = 2, cfg.t_check, cfg.heads, cfg.head_dim
  ids = rows_from_lengths(cfg.clip_lengths, t)
  valid = ids > 0
  ps = A.cudnn_packing.packed_segments(jnp.asarray(np.where(valid, ids, -1)),
                                       kv_mask=jnp.asarray(valid),
                                       max_segments=int(ids.max()) + 1)
  q, k, v = (qkv(rng, (b, t, h, d), jnp.bfloat16) for _ in range(3))
  g = jnp.asarray(rng.randn(b, t, h, d), jnp.bfloat16)
  ref = jax.jit(lambda q, k, v, g: attn_vjp(lambda q, k, v: A.dot_product_attention(
      q, k, v, segment_ids=jnp.asarray(ids)), q, k, v, g))(
          *(x.astype(jnp.float32) for x in (q, k, v, g)))
  rec = {"T": t, "padding_tokens": int((~valid).sum())}
  for mask_type in ("PADDING", "NO_MASK"):
    def f(q, k, v, g, mt=getattr(fused.MaskType, mask_type)):
      return attn_vjp(lambda q, k, v: fused.dot_product_attention(
          q, k, v, q_seqlen=ps.q_seqlen, kv_seqlen=ps.kv_seqlen, q_offsets=ps.q_offsets,
          kv_offsets=ps.kv_offsets, scale=d ** -0.5, mask_type=mt), q, k, v, g)
    try:
      res = run_or_lower(f, q, k, v, g, dry=cfg.cpu_dry_run)
    except Exception as e:  # noqa: BLE001 - one mask type failing must not hide the other
      rec[mask_type] = f"error {type(e).__name__}: {str(e)[:300]}"
      continue
    out, dq = res[:2]
    pad = jnp.asarray(~valid)[:, :, None, None]
    stats = {}
    for name, x in (("out", out), ("dq", dq)):
      x32 = jnp.where(pad, x.astype(jnp.float32), 0)
      stats[f"pad_{name}_finite"] = bool(jnp.isfinite(x32).all())
      stats[f"pad_{name}_all_zero"] = bool((x32 == 0).all())
    stats["out_vs_xla32"] = round(rel(out, ref[0], valid), 5)
    stats["dq_vs_xla32"] = round(rel(dq, ref[1], valid), 5)
    rec[mask_type] = stats
  return rec


# ------------------------------------------------------------------------------ (b) timing


def bench(cfg, rng, t: int, variant: str):
  b, h, d, clips = 1, cfg.heads, cfg.head_dim, 8
  lens = np.maximum(1, (rng.dirichlet(np.ones(clips)) * 0.9 * t).astype(int))
  ids = jnp.asarray(rows_from_lengths([list(lens)], t))
  impl, bound = {"cudnn-packed": ("cudnn", clips + 1), "cudnn-packed-M64": ("cudnn", 64),
                 "cudnn-dense": ("cudnn", None), "xla-mask": ("xla", None)}[variant]
  q, k, v, g = (qkv(rng, (b, t, h, d), jnp.bfloat16) for _ in range(4))

  def attn(q, k, v):
    return A.dot_product_attention(q, k, v, impl=impl, segment_ids=ids, max_segments=bound)

  fns = {"fwd": (lambda q, k, v, g: attn(q, k, v)),
         "fwdbwd": (lambda q, k, v, g: attn_vjp(attn, q, k, v, g)[1:])}
  rec = {"T": t, "heads": h, "head_dim": d, "clips": clips, "padding": int(t - lens.sum())}
  dry_cudnn = cfg.cpu_dry_run and impl == "cudnn"
  for name, fn in fns.items():
    if dry_cudnn:
      run_or_lower(fn, q, k, v, g, dry=True)
    t0 = time.perf_counter()
    if impl == "cudnn":
      rec[f"{name}_kernel"] = lowered_kind(fn, q, k, v, g)
    with emulated_cudnn() if dry_cudnn else contextlib.nullcontext():
      compiled = jax.jit(lambda *a, fn=fn: fn(*a)).lower(q, k, v, g).compile()
    rec[f"{name}_compile_s"] = round(time.perf_counter() - t0, 2)
    mem = compiled.memory_analysis()
    if mem is not None:
      rec[f"{name}_temp_mib"] = round(getattr(mem, "temp_size_in_bytes", 0) / 2 ** 20, 1)
    for _ in range(2):
      jax.block_until_ready(compiled(q, k, v, g))
    times = []
    for _ in range(cfg.reps):
      t1 = time.perf_counter()
      jax.block_until_ready(compiled(q, k, v, g))
      times.append(time.perf_counter() - t1)
    rec[f"{name}_ms"] = round(1e3 * statistics.median(times), 3)
    del compiled
  stats = jax.devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    rec["running_peak_mib"] = round(stats["peak_bytes_in_use"] / 2 ** 20, 1)
  rec["status"] = "ok (dry run: emulated cudnn)" if dry_cudnn else "ok"
  return rec


# ------------------------------------------------------------------------------ main


def table() -> None:
  print("\n== correctness (rel. error on valid tokens; bf16 vs float32 XLA / each clip alone / "
        "cudnn dense mask)")
  for r in RECORDS:
    if r["kind"] == "check":
      errs = " ".join(f"{k}={r[k]}" for k in r if "_vs_" in k and k.endswith("xla32"))
      print(f"{r['case']:<14} {r.get('status', '?'):<22} {errs} "
            f"finite={r.get('finite_packed_all_rows', '-')} kernel={r.get('packed_kernel', '-')} "
            f"{r.get('error', '')[:160]}")
    elif r["kind"] == "probe":
      print(f"{r['case']:<14} PADDING={r.get('PADDING', r.get('error', '-'))} "
            f"NO_MASK={r.get('NO_MASK', '-')}")
  print("\n== timing (B=1, 8 clips, 6 heads x 64, bf16)")
  print(f"{'T':>6} {'variant':<17} {'fwd ms':>9} {'fwd+bwd ms':>11} {'fwd temp MiB':>13} "
        f"{'f+b temp MiB':>13} {'run. peak MiB':>14}  status")
  for r in RECORDS:
    if r["kind"] == "bench":
      print(f"{r['T']:>6} {r['case']:<17} {str(r.get('fwd_ms', '-')):>9} "
            f"{str(r.get('fwdbwd_ms', '-')):>11} {str(r.get('fwd_temp_mib', '-')):>13} "
            f"{str(r.get('fwdbwd_temp_mib', '-')):>13} {str(r.get('running_peak_mib', '-')):>14}"
            f"  {r.get('status')} {r.get('fwdbwd_kernel', '')} {r.get('error', '')[:120]}")


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--quick", action="store_true", help="T 4k and 16k only, no loose bound")
  ap.add_argument("--cpu-dry-run", action="store_true",
                  help="tiny sizes on CPU: lower the cudnn calls for CUDA, run them emulated")
  ap.add_argument("--budget-s", type=float, default=200.0, help="skip cases started after this")
  ap.add_argument("--reps", type=int, default=10)
  ap.add_argument("--checks-only", action="store_true", help="correctness and probe, no timing")
  cfg = ap.parse_args()
  if cfg.cpu_dry_run:
    from jax._src.cudnn import fused_attention_stablehlo as fused
    # Lowering only, never run: the version and GPU-generation checks would refuse on CPU.
    fused.check_cudnn_version = lambda: 90800
    fused.check_is_flash_attention = lambda *a, **k: None
    cfg.t_check, cfg.heads, cfg.head_dim, cfg.text_len, cfg.tol = 64, 2, 16, 8, 1e-2
    cfg.clip_lengths = [[20, 13, 17], [6, 13, 3, 17, 9]]
    cfg.bench_t = [64, 128]
    cfg.reps = min(cfg.reps, 3)
  else:
    cfg.t_check, cfg.heads, cfg.head_dim, cfg.text_len, cfg.tol = 2048, 6, 64, 64, 1e-2
    # then padding. Even lengths: cuDNN refuses odd ones with a bias in training (the dense-mask
    # and clip-alone references; 577 failed on the H200), never the packed layout.
    cfg.clip_lengths = [[576, 334, 448], [192, 334, 78, 448, 320]]
    cfg.bench_t = [4096, 16384] if cfg.quick else [4096, 16384, 32768]
  dev = jax.devices()[0]
  env = {"jax": jax.__version__, "device": str(dev.device_kind), "platform": dev.platform,
         "compute_capability": getattr(dev, "compute_capability", None), "argv": sys.argv[1:]}
  try:
    from jax._src.cudnn import fused_attention_stablehlo as fused
    env["cudnn"] = fused.check_cudnn_version()
  except Exception as e:  # noqa: BLE001
    env["cudnn"] = f"{type(e).__name__}: {e}"
  emit({"kind": "env", **env})
  if dev.platform != "gpu" and not cfg.cpu_dry_run:
    sys.exit("this check needs a GPU; use --cpu-dry-run to test its logic on CPU")

  rng = np.random.RandomState(0)
  guarded("check", "self-attn", cfg.budget_s, lambda: correctness(cfg, rng, cross=False))
  guarded("check", "cross-attn", cfg.budget_s, lambda: correctness(cfg, rng, cross=True))
  guarded("probe", "raw-kernel", cfg.budget_s, lambda: raw_probe(cfg, rng))
  # xla-mask last at each T: its [H, T, T] float32 scores dwarf the rest of the running peak
  variants = ["cudnn-packed"] + ([] if cfg.quick else ["cudnn-packed-M64"]) + [
      "cudnn-dense", "xla-mask"]
  for t in [] if cfg.checks_only else cfg.bench_t:
    for variant in variants:
      guarded("bench", variant, cfg.budget_s, lambda t=t, v=variant: bench(cfg, rng, t, v), T=t)
  emit({"kind": "done", "wall_s": round(time.perf_counter() - T0, 1)})
  table()


if __name__ == "__main__":
  main()
