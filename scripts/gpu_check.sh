#!/usr/bin/env bash
# The GPU checks, in one go, for a machine with an NVIDIA GPU (CI never runs this; every test passes without one):
#   1. bench_influence's rows on the GPU: the CPU table's sizes (batches of 16), then a larger run in batches of 64
#   2. the main job in full mode on the built-in defaults (python -m gbair_nb recover --no-cache), timed
#   3. the unit tests with CUDA visible (quick mode, as scripts/test.sh; the notebooks are not run here)
# PARTS picks and orders them (default "bench job tests"; "quickjob" is the main job's --quick run). Each part has
# its own time limit in seconds (BENCH_S, JOB_S, TESTS_S) so one slow part cannot starve the others;
# logs, report.json and the recovery curve go to $OUT (default gpu_out/). docs/benchmarks.md ("On a GPU") has the
# figures one run gave.
#     bash scripts/gpu_check.sh
#     OUT=/tmp/gpu TESTS_S=900 PARTS=tests bash scripts/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MPLBACKEND=Agg

python - <<'EOF' 2>&1 | tee "$OUT/env.txt"
import os, platform, torch, transformers, peft
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "NO GPU VISIBLE"
print(f"python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}, "
      f"peft {peft.__version__}, {gpu}, {os.cpu_count()} CPU cores")
EOF
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv 2>&1 \
  | tee -a "$OUT/env.txt"

part() {  # part NAME LIMIT_S LOG COMMAND...: run one part under its own limit, say how long it took
  local name=$1 limit=$2 log=$3 start=$SECONDS status
  shift 3
  echo "== $name (limit ${limit} s) =="
  timeout -s INT -k 10 "$limit" "$@" >"$log" 2>&1
  status=$?
  tail -n 30 "$log"
  echo "== $name: exit $status after $((SECONDS - start)) s$([ "$status" = 124 ] && echo ' (time limit)') =="
}

bench() {
  part "bench_influence, the CPU table's sizes, batches of 16" "${BENCH_S:-120}" "$OUT/bench_influence_b16.log" \
    python benchmarks/bench_influence.py --device cuda
  part "bench_influence, 4096 x 256 x 2 checkpoints, batches of 64" "${BENCH_S:-120}" "$OUT/bench_influence_b64.log" \
    python benchmarks/bench_influence.py --device cuda --batch-size 64 --n-train 4096 --n-test 256 \
    --captum-train 512 --captum-test 32 --loop-n 256
}

main_job() {  # main_job NAME [--quick]: the main job on the built-in defaults; its report and curve come back
  local job
  job=$(mktemp -d)
  part "main job, $1 (python -m gbair_nb recover --no-cache ${2:-})" "${JOB_S:-300}" "$OUT/recover_$1.log" \
    python -m gbair_nb recover --no-cache ${2:-} --out "$job"
  cp "$job"/report.json "$OUT/report_$1.json" 2>/dev/null
  cp "$job"/recovery_curve.png "$OUT/recovery_curve_$1.png" 2>/dev/null
}

tests() {
  local timeout_flag
  timeout_flag=$(python -c "import pytest_timeout" 2>/dev/null && echo "--timeout=150")
  GBAIR_QUICK=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 part "unit tests, CUDA visible" "${TESTS_S:-300}" \
    "$OUT/tests.log" python -m pytest tests -n "${WORKERS:-12}" --dist loadscope -p no:cacheprovider -v -rfE \
    $timeout_flag
  grep -c " PASSED" "$OUT/tests.log" | sed 's/^/passed: /'
  grep -E "^(FAILED|ERROR) " "$OUT/tests.log" | sed 's/ - .*//' | sort -u | head -60
}

for p in ${PARTS:-bench job tests}; do
  case $p in
    bench) bench ;;
    job) main_job full ;;
    quickjob) main_job quick --quick ;;
    tests) tests ;;
    *) echo "unknown part '$p' (use bench, job, quickjob, tests)" >&2; exit 2 ;;
  esac
done
