#!/usr/bin/env bash
# The DiT step benchmark on a GPU (run by the device tool on an H200; CI never runs it).
# Carries ml_collections as a wheel in .whl/ (the GPU image has jax/flax/optax but not it).
# Usage there: bash benchmarks/gpu_dit_step.sh   (writes $OUT/dit_step.jsonl and the table)
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit 1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,memory.total --format=csv,noheader
python3 -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())"
run() {  # dtype attention remat batch
  timeout 135 python3 benchmarks/dit_step.py --variants S/2,B/2 --batch "$4" --dtype "$1" \
    --attention "$2" --remat "$3" --json >> "$OUT/dit_step.jsonl" 2>> "$OUT/dit_step.log" \
    || echo "FAILED: $*" | tee -a "$OUT/dit_step.log"
}
run float32  xla   nothing_saveable 64
run bfloat16 xla   nothing_saveable 64
run bfloat16 cudnn nothing_saveable 64
run bfloat16 cudnn none             256
python3 - "$OUT/dit_step.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
keys = ("variant", "mode", "dtype", "attention", "remat", "batch", "images_per_s", "compile_s",
        "peak_mib", "tflops", "mfu")
print(" | ".join(keys))
for r in rows:
  print(" | ".join(f"{r.get(k):.3g}" if isinstance(r.get(k), float) else str(r.get(k)) for k in keys))
PY
