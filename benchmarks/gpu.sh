#!/usr/bin/env bash
# Issue #16 on a GPU machine, in one go: the device, the step memory table, the side-by-side
# benchmarks against PyTorch at VOC sizes (float32 and bfloat16) and the main job (`make run`'s
# config) in float32 and bfloat16; results and logs under benchmarks/results/gpu/.
#
#   bash benchmarks/gpu.sh [--smoke] [--out DIR]
#
# --smoke: the same steps at smoke size on the CPU in a few minutes (CI runs it from
# tests/test_gpu_script.py); results under benchmarks/results/gpu/smoke/ unless --out.
# Env: PYTHON (default python3). Every step runs even if one before it failed; the script
# exits 1 if any failed (each failure is named on stderr and in summary.md).
set -uo pipefail

usage() { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; }
SMOKE=0
OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) SMOKE=1 ;;
    --out) [ $# -ge 2 ] || { echo "error: --out needs a folder" >&2; exit 2; }; OUT="$2"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "error: unknown argument '$1'; use --smoke and/or --out DIR (--help)" >&2; exit 2 ;;
  esac
  shift
done

cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD
PYTHON=${PYTHON:-python3}
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
MAIN_CONFIG=$(sed -n 's/^MAIN_CONFIG ?= *//p' Makefile)
if [ "$SMOKE" = 1 ]; then
  SIZE=smoke
  OUT=${OUT:-benchmarks/results/gpu/smoke}
  MAIN_CONFIG="${MAIN_CONFIG%%:*}:smoke"
  export JAX_PLATFORMS=cpu
  MEMORY_ARGS=(--smoke)
else
  SIZE=voc
  OUT=${OUT:-benchmarks/results/gpu}
  MEMORY_ARGS=()
fi
mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" && pwd)
FAILED=()

step() {  # step NAME COMMAND...: runs COMMAND, its output to the screen and $OUT/NAME.log
  local name=$1
  shift
  echo "== $name: $*"
  local start=$SECONDS
  if ! "$@" 2>&1 | tee "$OUT/$name.log"; then
    FAILED+=("$name")
    echo "error: step '$name' failed; its log: $OUT/$name.log" >&2
  fi
  echo "$name $((SECONDS - start))" >> "$OUT/seconds.txt"
}

device() {
  date -u +"%Y-%m-%dT%H:%M:%SZ"
  echo "git $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  else
    echo "nvidia-smi: not found"
  fi
  "$PYTHON" - "$SMOKE" <<'EOF'
import importlib.metadata as md
import sys

import jax

for name in ("jax", "jaxlib", "flax", "optax", "torch"):
    try:
        print(name, md.version(name))
    except md.PackageNotFoundError:
        print(name, "not installed")
devices = jax.devices()
print("jax devices:", ", ".join(f"{d.platform}:{d.device_kind}" for d in devices))
if sys.argv[1] == "0" and devices[0].platform != "gpu":
    sys.exit(f"JAX sees no GPU ({devices[0].platform}); install jax[cuda12] or use --smoke.")
EOF
}

vs_torch() {  # vs_torch DTYPE
  JWSOL_BENCH_SIZE=$SIZE JWSOL_BENCH_DTYPE=$1 JWSOL_BENCH_RESULTS="$OUT" \
    "$PYTHON" -m pytest benchmarks/test_vs_torch.py -q -s -p no:cacheprovider
}

main_job() {  # main_job DTYPE: trains in a scratch workdir, keeps the metrics (not checkpoints)
  local work
  work=$(mktemp -d) || return 1
  "$PYTHON" train.py --config "$MAIN_CONFIG" --workdir "$work" --config.train.dtype="$1" \
    --config.train.progress_bar=False
  local rc=$?
  mkdir -p "$OUT/main_$1"
  cp "$work"/eval_metrics.json "$work"/metrics.jsonl "$OUT/main_$1/" 2>/dev/null
  rm -rf "$work"
  return $rc
}

rm -f "$OUT/seconds.txt"
step device device
if [[ " ${FAILED[*]} " == *" device "* ]] && [ "$SMOKE" = 0 ]; then
  echo "error: no GPU for JAX: nothing else run (see $OUT/device.log)" >&2
  exit 1
fi
step memory "$PYTHON" benchmarks/memory_table.py "${MEMORY_ARGS[@]}" --out "$OUT"
if [ -f benchmarks/test_vs_torch.py ]; then
  for dtype in float32 bfloat16; do step "vs_torch_$dtype" vs_torch "$dtype"; done
else
  echo "benchmarks/test_vs_torch.py is not here yet (issue #16's side-by-side benchmarks):" \
    "the PyTorch comparison is skipped" | tee "$OUT/vs_torch.log"
fi
for dtype in float32 bfloat16; do step "main_$dtype" main_job "$dtype"; done

"$PYTHON" - "$OUT" "$MAIN_CONFIG" "${FAILED[@]}" <<'EOF' > "$OUT/summary.md"
import json
import sys
from pathlib import Path

out, config, failed = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
print("# benchmarks/gpu.sh\n\n```\n" + (out / "device.log").read_text().strip() + "\n```\n")
seconds = dict(line.split() for line in (out / "seconds.txt").read_text().splitlines())
print("| step | seconds |\n|---|---|")
print("\n".join(f"| {k} | {v} |" for k, v in seconds.items()))
print(f"\nFailed steps: {', '.join(failed) or 'none'}\n")
memory = out / ("memory_table_smoke.json" if "smoke" in config else "memory_table.json")
if memory.exists():
    print("| job | trunk | scale (canvas) | float32 GiB | bfloat16 GiB |\n|---|---|---|---|---|")
    for r in json.loads(memory.read_text())["rows"]:
        print(f"| {r['job']} | {r['backbone']} | {r['scale']} ({r['canvas']} px) | "
              f"{r['float32_gib']:.2f} | {r['bfloat16_gib']:.2f} |")
for path in sorted(out.glob("vs_torch*.json")):  # benchmarks/test_vs_torch.py's tables
    print(f"\n{path.name}:\n\n" + json.loads(path.read_text()).get("table", "(no table)"))
for dtype in ("float32", "bfloat16"):
    path = out / f"main_{dtype}" / "eval_metrics.json"
    if path.exists():
        metrics = json.loads(path.read_text())
        keys = [k for k in ("map", "corloc", "cls_map", "step") if k in metrics]
        print(f"\n{config} in {dtype}: " + ", ".join(f"{k} {metrics[k]:.4g}" for k in keys))
EOF
cat "$OUT/summary.md"
if [ ${#FAILED[@]} -gt 0 ]; then
  echo "error: failed steps: ${FAILED[*]} (logs in $OUT)" >&2
  exit 1
fi
