#!/usr/bin/env bash
# The GPU tests, then the GPU benchmarks, each under a timeout; collects the results.
#
#   bash bench/run_gpu.sh [--quick] [--total-s S] [STEP ...]   STEP: tests attention norm_mlp attribute encoders
#                                                              dataset (default: all six, in this order)
# No total (--total-s S or TOTAL_S; default none): every step runs to its own end. With one, the call stays
# under it: a step gets <STEP>_TIMEOUT if set, else an equal share of what is left over the steps still to
# run, is skipped below MIN_STEP_S (60), and a benchmark gets --budget-s = timeout - MARGIN_S (60).
# Environment: RESULTS_DIR (bench/results), PYTHON, TEST_JOBS (min(6, CPUs)), OUT (a folder: this run's
# tarball, MAX_OUT_FILES - 2 (default 3) markdown tables and the summary log are copied there), <STEP>_ARGS (more
# options of that benchmark, e.g. ATTENTION_ARGS="--cases mla,sink"). See bench/README.md.
set -u
cd "$(dirname "$0")/.."
ROOT=$(pwd)
START=$(date +%s)
QUICK=0
STEPS=()
TOTAL_S=${TOTAL_S:-0}
while [ $# -gt 0 ]; do
  case "$1" in
    --quick|quick) QUICK=1 ;;
    --full|full) QUICK=0 ;;
    --total-s) TOTAL_S=$2; shift ;;
    tests|attention|norm_mlp|attribute|encoders|dataset) STEPS+=("$1") ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "run_gpu.sh: unknown argument '$1' (steps: tests attention norm_mlp attribute encoders dataset; flags: --quick, --total-s S)"; exit 2 ;;
  esac
  shift
done
[ ${#STEPS[@]} -eq 0 ] && STEPS=(tests attention norm_mlp attribute encoders dataset)
PYTHON=${PYTHON:-python3}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python
export PYTHONUNBUFFERED=1
MIN_STEP_S=${MIN_STEP_S:-60}
MARGIN_S=${MARGIN_S:-60}
MODE_FLAG=(); [ $QUICK -eq 1 ] && MODE_FLAG=(--quick)
RESULTS_DIR=${RESULTS_DIR:-$ROOT/bench/results}
mkdir -p "$RESULTS_DIR"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
MARK="$RESULTS_DIR/.run_gpu_$STAMP.start"
touch "$MARK"
SUMMARY="$RESULTS_DIR/run_gpu_${STAMP}_summary.log"
say() { echo "$*" | tee -a "$SUMMARY"; }

say "run_gpu.sh $STAMP: steps=${STEPS[*]} quick=$QUICK total=${TOTAL_S}s python=$PYTHON"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem,temperature.gpu,power.draw \
  --format=csv 2>&1 | tee -a "$SUMMARY" || true
# lrp_triton not installed (no `pip install -e .` on the device machine): a shadow package of links in /tmp
if ! $PYTHON -c "import lrp_triton.kernels, lrp_triton.models" >/dev/null 2>&1; then
  SHADOW=$($PYTHON bench/common.py --shadow)
  export PYTHONPATH="$SHADOW${PYTHONPATH:+:$PYTHONPATH}"
  say "lrp_triton not installed: using the shadow package at $SHADOW"
fi
$PYTHON -c "import torch, triton, lrp_triton.ops; print('torch', torch.__version__, 'triton', triton.__version__, \
'lrp_triton', lrp_triton.__file__, 'gpu', torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)" \
  2>&1 | tee -a "$SUMMARY"

declare -A STATUS
i=0
for step in "${STEPS[@]}"; do
  i=$((i + 1))
  cmd=()
  case $step in
    tests)
      XDIST=()
      jobs=${TEST_JOBS:-$(( $(nproc) < 6 ? $(nproc) : 6 ))}
      if [ "$jobs" -gt 1 ] && $PYTHON -c "import xdist" >/dev/null 2>&1; then XDIST=(-n "$jobs"); fi
      cmd=($PYTHON -m pytest -q -m gpu -p no:cacheprovider -rsP ${XDIST[@]+"${XDIST[@]}"} tests/) ;;
    *) var="$(echo "$step" | tr a-z A-Z)_ARGS"; read -r -a extra <<< "${!var:-}"
       cmd=($PYTHON "bench/bench_$step.py" ${MODE_FLAG[@]+"${MODE_FLAG[@]}"} --out "$RESULTS_DIR" ${extra[@]+"${extra[@]}"}) ;;
  esac
  t=0
  if [ "$TOTAL_S" -gt 0 ]; then
    left=$(( TOTAL_S - ($(date +%s) - START) ))
    var="$(echo "$step" | tr a-z A-Z)_TIMEOUT"
    t=${!var:-$(( left / (${#STEPS[@]} - i + 1) ))}
    [ "$t" -gt "$left" ] && t=$left
    if [ "$t" -lt "$MIN_STEP_S" ]; then
      STATUS[$step]="skipped (${t}s of the ${TOTAL_S}s total left for it)"; say "== $step: ${STATUS[$step]}"; continue
    fi
    b=$(( t - MARGIN_S )); [ "$b" -lt 30 ] && b=30
    [ "$step" != tests ] && cmd+=(--budget-s "$b")
  fi
  log="$RESULTS_DIR/run_gpu_${STAMP}_${step}.log"
  say "== $step (timeout ${t}s; 0 = none): ${cmd[*]}"
  t0=$(date +%s)
  if [ "$t" -gt 0 ]; then timeout --signal=TERM --kill-after=15 "$t" "${cmd[@]}" 2>&1 | tee "$log"
  else "${cmd[@]}" 2>&1 | tee "$log"; fi
  rc=${PIPESTATUS[0]}
  dt=$(( $(date +%s) - t0 ))
  case $rc in
    0) STATUS[$step]="ok (${dt}s)" ;;
    124|137) STATUS[$step]="TIMEOUT after ${dt}s (rc $rc)" ;;
    *) STATUS[$step]="FAILED rc=$rc (${dt}s)" ;;
  esac
  say "== $step: ${STATUS[$step]}"
done

say ""
say "== summary ($(( $(date +%s) - START ))s)"
for step in "${STEPS[@]}"; do say "$step: ${STATUS[$step]:-not run}"; done
mapfile -t NEW < <(find "$RESULTS_DIR" -maxdepth 1 -type f -newer "$MARK" \( -name '*.json' -o -name '*.md' -o -name '*.log' \) | sort)
rm -f "$MARK"
say "files: ${NEW[*]##*/}"
if [ -n "${OUT:-}" ] && [ -d "${OUT:-}" ]; then
  tar czf "$OUT/bench_results_$STAMP.tar.gz" -C "$RESULTS_DIR" "${NEW[@]##*/}" 2>/dev/null
  n=0
  for f in "${NEW[@]}"; do
    case $f in *.md) [ $n -lt $(( ${MAX_OUT_FILES:-5} - 2 )) ] && cp "$f" "$OUT/" && n=$((n + 1)) ;; esac
  done
  cp "$SUMMARY" "$OUT/"
  say "copied to \$OUT: $(ls "$OUT" | tr '\n' ' ')"
fi
# the end of the output is what a remote call shows first: the tables' heads last
for f in "${NEW[@]}"; do
  case $f in *.md) echo; echo "---- $(basename "$f") (head)"; sed -n '1,/^## All measurements/p' "$f" | head -60 ;; esac
done
for step in "${STEPS[@]}"; do case ${STATUS[$step]:-} in ok*|skipped*) ;; *) exit 1 ;; esac; done
exit 0
