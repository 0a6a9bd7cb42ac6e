#!/usr/bin/env bash
# Run the GPU tests and the GPU benchmarks in one go, each step under a hard timeout.
#
#   bash bench/run_gpu.sh [--quick] [STEP ...]      STEP: tests attention norm_mlp attribute encoders
#                                                    (default: all five, as far as TOTAL_S allows)
#
# Results (JSON, markdown, one log per step) go to bench/results/ (RESULTS_DIR to change). When
# $OUT is set (the device machine of this workplace), a tarball of this run's files, the markdown
# tables and a summary log are copied there (at most 5 files), since only $OUT comes back.
#
# The whole call stays under TOTAL_S seconds (default 570, inside the 600 s limit of one device
# command): a step that cannot get MIN_STEP_S seconds is skipped, and each benchmark's own
# --budget-s is cut to what is left. Environment overrides: TOTAL_S, TESTS_TIMEOUT,
# ATTENTION_TIMEOUT, NORM_MLP_TIMEOUT, ATTRIBUTE_TIMEOUT, ENCODERS_TIMEOUT, TEST_JOBS (6), RESULTS_DIR, PYTHON.
set -u
cd "$(dirname "$0")/.."
ROOT=$(pwd)
START=$(date +%s)

QUICK=0
STEPS=()
for a in "$@"; do
  case "$a" in
    --quick|quick) QUICK=1 ;;
    --full|full) QUICK=0 ;;
    tests|attention|norm_mlp|attribute|encoders) STEPS+=("$a") ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "run_gpu.sh: unknown argument '$a' (steps: tests attention norm_mlp attribute encoders; flag: --quick)"; exit 2 ;;
  esac
done
[ ${#STEPS[@]} -eq 0 ] && STEPS=(tests attention norm_mlp attribute encoders)

PYTHON=${PYTHON:-python3}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python
export PYTHONUNBUFFERED=1
TOTAL_S=${TOTAL_S:-570}
MIN_STEP_S=${MIN_STEP_S:-60}
TESTS_TIMEOUT=${TESTS_TIMEOUT:-300}
if [ $QUICK -eq 1 ]; then
  ATTENTION_TIMEOUT=${ATTENTION_TIMEOUT:-200}; NORM_MLP_TIMEOUT=${NORM_MLP_TIMEOUT:-150}
  ATTRIBUTE_TIMEOUT=${ATTRIBUTE_TIMEOUT:-200}; ENCODERS_TIMEOUT=${ENCODERS_TIMEOUT:-240}; MODE_FLAG=--quick
else
  ATTENTION_TIMEOUT=${ATTENTION_TIMEOUT:-450}; NORM_MLP_TIMEOUT=${NORM_MLP_TIMEOUT:-300}
  ATTRIBUTE_TIMEOUT=${ATTRIBUTE_TIMEOUT:-540}; ENCODERS_TIMEOUT=${ENCODERS_TIMEOUT:-420}; MODE_FLAG=
fi
RESULTS_DIR=${RESULTS_DIR:-$ROOT/bench/results}
mkdir -p "$RESULTS_DIR"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
MARK="$RESULTS_DIR/.run_gpu_$STAMP.start"
touch "$MARK"
SUMMARY="$RESULTS_DIR/run_gpu_${STAMP}_summary.log"

say() { echo "$*" | tee -a "$SUMMARY"; }
left() { echo $(( TOTAL_S - ($(date +%s) - START) )); }

say "run_gpu.sh $STAMP: steps=${STEPS[*]} quick=$QUICK total=${TOTAL_S}s python=$PYTHON"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem,temperature.gpu,power.draw \
  --format=csv 2>&1 | tee -a "$SUMMARY" || true
$PYTHON -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'triton', triton.__version__, 'gpu', torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)" \
  2>&1 | tee -a "$SUMMARY"

# lrp_triton importable? (the device machine has no `pip install -e .`): else a shadow package
# tree in /tmp with links to lrp_triton/*, kernels/ and models/ (the package_dir map of setup.py).
if ! $PYTHON -c "import lrp_triton.kernels.attention_torch" >/dev/null 2>&1; then
  SHADOW=$(mktemp -d /tmp/lrp_shadow.XXXXXX)
  mkdir -p "$SHADOW/lrp_triton"
  for f in "$ROOT"/lrp_triton/*; do ln -s "$f" "$SHADOW/lrp_triton/$(basename "$f")"; done
  ln -s "$ROOT/kernels" "$SHADOW/lrp_triton/kernels"
  [ -d "$ROOT/models" ] && ln -s "$ROOT/models" "$SHADOW/lrp_triton/models"
  export PYTHONPATH="$SHADOW${PYTHONPATH:+:$PYTHONPATH}"
  say "lrp_triton not installed: using shadow package at $SHADOW"
fi
$PYTHON -c "import lrp_triton.kernels.attention_torch, lrp_triton.ops" 2>&1 | tee -a "$SUMMARY" \
  && say "lrp_triton imports: $($PYTHON -c 'import lrp_triton, os; print(os.path.dirname(lrp_triton.__file__))')"

declare -A STATUS
run_step() {  # name timeout command...
  local name=$1 t=$2; shift 2
  local rem; rem=$(left)
  if [ "$rem" -lt "$MIN_STEP_S" ]; then
    STATUS[$name]="skipped (only ${rem}s left of TOTAL_S)"; say "== $name: ${STATUS[$name]}"; return
  fi
  [ "$t" -gt "$rem" ] && t=$rem
  local log="$RESULTS_DIR/run_gpu_${STAMP}_${name}.log"
  say "== $name (timeout ${t}s): $*"
  local t0; t0=$(date +%s)
  timeout --signal=TERM --kill-after=15 "$t" "$@" 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]}
  local dt=$(( $(date +%s) - t0 ))
  case $rc in
    0) STATUS[$name]="ok (${dt}s)" ;;
    124|137) STATUS[$name]="TIMEOUT after ${dt}s (rc $rc)" ;;
    *) STATUS[$name]="FAILED rc=$rc (${dt}s)" ;;
  esac
  say "== $name: ${STATUS[$name]}"
}

for step in "${STEPS[@]}"; do
  case $step in
    tests)
      # every test marked `gpu`, in every test file (tests/test_attention_gpu.py and any others);
      # with pytest-xdist, TEST_JOBS processes share the GPU, so Triton compiles in parallel
      XDIST=()
      if [ "${TEST_JOBS:-6}" -gt 1 ] && $PYTHON -c "import xdist" >/dev/null 2>&1; then XDIST=(-n "${TEST_JOBS:-6}"); fi
      run_step tests "$TESTS_TIMEOUT" $PYTHON -m pytest -q -m gpu -p no:cacheprovider -rsP ${XDIST[@]+"${XDIST[@]}"} tests/ ;;
    attention)
      rem=$(left); t=$ATTENTION_TIMEOUT; [ "$t" -gt "$rem" ] && t=$rem
      budget=$(( t - 100 )); [ $QUICK -eq 0 ] && [ "$budget" -gt 330 ] && budget=330
      [ "$budget" -lt 30 ] && budget=30
      run_step attention "$t" $PYTHON bench/bench_attention.py $MODE_FLAG --out "$RESULTS_DIR" --budget-s "$budget" ;;
    norm_mlp)
      # >>> bench/bench_norm_mlp.py (other engineer): runs when the file exists; adjust its flags here.
      if [ -f bench/bench_norm_mlp.py ]; then
        rem=$(left); t=$NORM_MLP_TIMEOUT; [ "$t" -gt "$rem" ] && t=$rem
        budget=$(( t - 60 )); [ $QUICK -eq 0 ] && [ "$budget" -gt 240 ] && budget=240
        [ "$budget" -lt 30 ] && budget=30
        run_step norm_mlp "$t" $PYTHON bench/bench_norm_mlp.py $MODE_FLAG --out "$RESULTS_DIR" --budget-s "$budget"
      else
        STATUS[norm_mlp]="skipped (bench/bench_norm_mlp.py not written yet)"; say "== norm_mlp: ${STATUS[norm_mlp]}"
      fi ;;
    attribute)
      # bench/bench_attribute.py (end-to-end attribution; ~7.5 min in full mode): runs when present
      if [ -f bench/bench_attribute.py ]; then
        rem=$(left); t=$ATTRIBUTE_TIMEOUT; [ "$t" -gt "$rem" ] && t=$rem
        budget=$(( t - 60 )); [ "$budget" -lt 30 ] && budget=30
        run_step attribute "$t" $PYTHON bench/bench_attribute.py $MODE_FLAG --out "$RESULTS_DIR" --budget-s "$budget"
      else
        STATUS[attribute]="skipped (bench/bench_attribute.py not written yet)"; say "== attribute: ${STATUS[attribute]}"
      fi ;;
    encoders)
      # bench/bench_encoders.py (end-to-end on BERT-base, ViT-B/16, Flan-T5-base; ~6 min in full mode)
      if [ -f bench/bench_encoders.py ]; then
        rem=$(left); t=$ENCODERS_TIMEOUT; [ "$t" -gt "$rem" ] && t=$rem
        budget=$(( t - 60 )); [ $QUICK -eq 0 ] && [ "$budget" -gt 330 ] && budget=330
        [ "$budget" -lt 30 ] && budget=30
        run_step encoders "$t" $PYTHON bench/bench_encoders.py $MODE_FLAG --out "$RESULTS_DIR" --budget-s "$budget"
      else
        STATUS[encoders]="skipped (bench/bench_encoders.py not written yet)"; say "== encoders: ${STATUS[encoders]}"
      fi ;;
  esac
done

say ""
say "== summary ($(( $(date +%s) - START ))s)"
for step in "${STEPS[@]}"; do say "$step: ${STATUS[$step]:-not run}"; done

# files of this run: JSON, markdown, logs
mapfile -t NEW < <(find "$RESULTS_DIR" -maxdepth 1 -type f -newer "$MARK" \( -name '*.json' -o -name '*.md' -o -name '*.log' \) | sort)
rm -f "$MARK"
say "files: ${NEW[*]##*/}"
if [ -n "${OUT:-}" ] && [ -d "${OUT:-}" ]; then
  tar czf "$OUT/bench_results_$STAMP.tar.gz" -C "$RESULTS_DIR" "${NEW[@]##*/}" 2>/dev/null
  n=0
  for f in "${NEW[@]}"; do
    case $f in *.md) [ $n -lt 3 ] && cp "$f" "$OUT/" && n=$((n + 1)) ;; esac
  done
  cp "$SUMMARY" "$OUT/"
  say "copied to \$OUT: $(ls "$OUT" | tr '\n' ' ')"
fi

# the end of the output is what a device call returns: ratio tables last
for f in "${NEW[@]}"; do
  case $f in *.md)
    echo; echo "---- $(basename "$f") (head)"; sed -n '1,/^## All measurements/p' "$f" | head -60 ;;
  esac
done
for step in "${STEPS[@]}"; do case ${STATUS[$step]:-} in ok*|skipped*) ;; *) exit 1 ;; esac; done
exit 0
