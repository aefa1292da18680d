#!/usr/bin/env bash
# The test command: the README and .ci/run both call this file, so they run exactly the same thing.
# Unit tests + the notebooks (nbval, lax: only errors fail, outputs are not compared), quick mode, on 2 workers.
set -euo pipefail
cd "$(dirname "$0")/.."
export GBAIR_QUICK=1            # quick mode: small sizes everywhere (notebooks assert it took effect)
export OMP_NUM_THREADS=1        # one thread per xdist worker: 2 workers on 2 cores
export MKL_NUM_THREADS=1
export TOKENIZERS_PARALLELISM=false
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export MPLBACKEND=Agg
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # the notebooks (kernel cwd = notebooks/) import this checkout
status=0
python -m pytest tests notebooks --nbval-lax -n 2 --dist loadscope -p no:cacheprovider "$@" || status=$?
if [ "$status" -eq 5 ]; then
  echo "error: pytest collected no tests (exit 5): that is a failure, not a pass" >&2
  exit 1
fi
exit "$status"
