#!/usr/bin/env bash
# One command for a machine with an NVIDIA H100/H200 and no internet (torch with CUDA, nvcc, cmake, ninja,
# pybind11 and scikit-build-core preinstalled): build tangentlens against the installed torch for sm_90,
# run the whole test suite (the CUDA tests included), compute-sanitizer memcheck and racecheck over the
# CUDA kernel tests, and `python -m bench --device cuda`, all inside BUDGET seconds (9 minutes). Logs,
# junit XML, a summary and bench's cuda-<gpu>.json land in OUTDIR (commit the JSON to bench/results/).
#
#   scripts/gpu_check.sh OUTDIR             the check (run from anywhere; it works in the repository)
#   scripts/gpu_check.sh OUTDIR --dry-run   on any machine, no GPU needed: the tools and packages present,
#                                           every step with its time cap, the caps against the budget, the
#                                           sanitizer's test selection, and the bench's time-boxing (a
#                                           budgeted smoke run on the CPU whose JSON must show it)
#
# Environment: PYTHON (default python3), BUDGET (seconds, default 540), JOBS (build jobs, default nproc).
# Nothing is downloaded: pip runs with --no-index and the build uses the installed torch
# (--no-build-isolation). The package is installed into a scratch directory on PYTHONPATH, not into the
# environment. Test files that import a package the machine lacks are left out, each with a log line.
set -uo pipefail

usage() { echo "usage: $0 OUTDIR [--dry-run]" >&2; exit 2; }
[[ $# -ge 1 && $# -le 2 ]] || usage
OUT=$1
DRY=0
if [[ $# -eq 2 ]]; then [[ $2 == --dry-run ]] || usage; DRY=1; fi
[[ $OUT == --* ]] && usage

mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" && pwd)
PY=${PYTHON:-python3}
[[ $PY == */* ]] && PY=$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY") # a path: absolute before the cd
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO" || exit 2
BUDGET=${BUDGET:-540}
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 8)}
WORK=${TMPDIR:-/tmp}/tangentlens-gpu-check
SITE=$WORK/site

# Time caps per step (seconds). The bench takes what is left, at least BENCH_MIN; MARGIN covers the steps
# between the capped commands (imports, logs). CAPS_TOTAL + BENCH_MIN + MARGIN must fit BUDGET.
BUILD_CAP=200
TEST_CAP=170
SANITIZER_CAP=45 # per tool (memcheck, racecheck)
BENCH_MIN=60
MARGIN=15
CAPS_TOTAL=$((BUILD_CAP + TEST_CAP + 2 * SANITIZER_CAP))

# The CUDA kernel tests (named test_cuda_*) the sanitizer runs: one file per kernel family.
SANITIZER_TESTS=(tests/test_paths.py tests/test_philox.py tests/test_lpips_ops.py tests/test_bias_act.py
  tests/test_upfirdn2d.py tests/test_filtered_lrelu.py)
# Packages some test files import at module level; missing ones leave those files out.
OPTIONAL_TEST_PACKAGES=(hypothesis scipy sklearn matplotlib)

START=$SECONDS
STATUS=0
SUMMARY=$OUT/summary.txt
: >"$SUMMARY"
log() { echo "[gpu_check $((SECONDS - START))s] $*" | tee -a "$SUMMARY"; }
fail() { log "FAIL: $*"; STATUS=1; }
left() { echo $((BUDGET - (SECONDS - START))); }
cap() { # cap WANTED RESERVED: WANTED, cut so that RESERVED seconds stay for the later steps
  local c=$(($(left) - $2))
  ((c > $1)) && c=$1
  ((c < 1)) && c=1
  echo "$c"
}
# run NAME CAP LOGFILE CMD...: the command under `timeout`, its output in LOGFILE, its status logged
run() {
  local name=$1 limit=$2 logfile=$3 rc
  shift 3
  local t0=$SECONDS
  log "$name: start (cap ${limit}s): $*"
  timeout --signal=TERM --kill-after=10 "$limit" "$@" >"$logfile" 2>&1
  rc=$?
  if ((rc == 124 || rc == 137)); then
    fail "$name: stopped at its ${limit}s cap (log: $logfile)"
  elif ((rc != 0)); then
    fail "$name: exit status $rc (log: $logfile)"
  else
    log "$name: ok in $((SECONDS - t0))s"
  fi
  return "$rc"
}

have_module() { "$PY" -c "import $1" >/dev/null 2>&1; }

# --ignore options for test files that import a missing package at module level
test_ignores() {
  IGNORES=()
  local pkg f
  for pkg in "${OPTIONAL_TEST_PACKAGES[@]}"; do
    have_module "$pkg" && continue
    for f in $(grep -l -E "^(import|from) $pkg([. ]|$)|importorskip\\(\"$pkg\"\\)" tests/*.py); do
      log "tests: leaving out $f: it needs $pkg, which is not installed here"
      IGNORES+=("--ignore=$f")
    done
    for f in $(grep -l -E "^[[:space:]]+(import|from) $pkg([. ]|$)" tests/*.py); do
      log "tests: $f imports $pkg inside some tests, which will fail here ($pkg is not installed)"
    done
  done
}

log "repository $REPO at $(git rev-parse --short HEAD 2>/dev/null || echo '?'), out $OUT, budget ${BUDGET}s"
{
  echo "date: $(date -u +%FT%TZ)"
  echo "python: $("$PY" -c 'import sys; print(sys.version.split()[0], sys.executable)' 2>&1)"
  echo "torch: $("$PY" -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda)' 2>&1)"
  for tool in nvcc cmake ninja compute-sanitizer nvidia-smi; do
    printf '%s: %s\n' "$tool" "$(command -v "$tool" || echo 'not found')"
  done
  command -v nvcc >/dev/null && nvcc --version | tail -n 2
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  for pkg in numpy pytest xdist hypothesis scipy sklearn matplotlib tqdm scikit_build_core pybind11; do
    printf '%s: %s\n' "$pkg" "$("$PY" -c "import $pkg; print(getattr($pkg, '__version__', 'present'))" 2>/dev/null ||
      echo 'not installed')"
  done
} >"$OUT/env.log" 2>&1
cat "$OUT/env.log"

if ((CAPS_TOTAL + BENCH_MIN + MARGIN > BUDGET)); then
  fail "the step caps (${CAPS_TOTAL}s) + the bench's minimum (${BENCH_MIN}s) + margin (${MARGIN}s) exceed the budget (${BUDGET}s)"
fi
have_module torch || fail "python ($PY) cannot import torch"
have_module pytest || fail "pytest is not installed: the tests and the sanitizer runs cannot run"

# ---- dry run: checks that need no GPU -------------------------------------------------------------------
if ((DRY)); then
  log "dry run: no build, no GPU steps; the plan and its caps:"
  log "  build:  TORCH_CUDA_ARCH_LIST=9.0 TANGENTLENS_CUDA=ON pip install --no-build-isolation --no-deps --no-index --target $SITE .  (cap ${BUILD_CAP}s)"
  log "  tests:  pytest tests (CUDA tests included; skipped CUDA tests fail the check)  (cap ${TEST_CAP}s)"
  log "  memcheck, racecheck: compute-sanitizer over -k cuda of ${SANITIZER_TESTS[*]}  (cap ${SANITIZER_CAP}s each)"
  log "  bench:  python -m bench --device cuda --skip 'metrics.*' --budget <what is left>  (at least ${BENCH_MIN}s)"
  for tool in nvcc cmake ninja compute-sanitizer nvidia-smi; do
    command -v "$tool" >/dev/null || log "  note: $tool not found here (needed on the GPU machine)"
  done
  test_ignores
  # every sanitizer file must still hold CUDA tests, or the sanitizer would silently check nothing there
  for f in "${SANITIZER_TESTS[@]}"; do
    [[ -f $f ]] || { fail "sanitizer test file $f does not exist"; continue; }
    n=$("$PY" -m pytest --collect-only -q -p no:cacheprovider -k cuda "$f" 2>/dev/null | grep -c "::test_cuda")
    ((n > 0)) && log "sanitizer selection: $f: $n CUDA tests" || fail "sanitizer selection: no test_cuda_* test in $f"
  done
  # the bench's time-boxing, end to end on the CPU: a budget that the first case spends
  rm -f "$OUT/cpu-dry-run.json"
  run "bench time-boxing" 300 "$OUT/bench-dry-run.log" "$PY" -m bench --device cpu --quick \
    --only 'bias_act.*,upfirdn2d.*' --budget 0.5 --out "$OUT/cpu-dry-run.json"
  "$PY" - "$OUT/cpu-dry-run.json" <<'EOF' >>"$SUMMARY" 2>&1 || fail "bench time-boxing: the results file does not show it (see summary)"
import json, sys
doc = json.load(open(sys.argv[1]))
done, skipped = sorted(doc["cases"]), doc.get("skipped", [])
print(f"bench time-boxing: ran {done}, skipped {skipped}")
assert len(done) == 1 and len(skipped) == 1, "expected one case run and one skipped by the budget"
r = doc["cases"][done[0]]
assert r["repeats"] == 1 and r.get("repeats_cut_by_budget"), "expected the case's rounds cut to one"
EOF
  log "dry run done in $((SECONDS - START))s, status $STATUS"
  exit $STATUS
fi

# ---- the check on the GPU machine ----------------------------------------------------------------------
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || fail "torch sees no CUDA device"
command -v nvcc >/dev/null || fail "nvcc not found: the CUDA kernels cannot be built"
((STATUS == 0)) || { log "stopping: the machine cannot run the check"; exit 1; }

rm -rf "$SITE" && mkdir -p "$SITE"
export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
BUILD_OK=0
if TORCH_CUDA_ARCH_LIST=9.0 TANGENTLENS_CUDA=ON CMAKE_BUILD_PARALLEL_LEVEL=$JOBS \
  run build "$(cap $BUILD_CAP $((TEST_CAP + 2 * SANITIZER_CAP + BENCH_MIN + MARGIN)))" "$OUT/build.log" \
  "$PY" -m pip install --no-build-isolation --no-deps --no-index --no-cache-dir --target "$SITE" -v .; then
  if (cd "$WORK" && "$PY" -c "import tangentlens as t; i = t.native_build_info(); print(i); assert i['cuda'], i") \
    >>"$OUT/build.log" 2>&1; then
    BUILD_OK=1
    log "build: $(tail -n 1 "$OUT/build.log")"
  else
    fail "build: the installed package has no CUDA kernels (see the end of $OUT/build.log)"
  fi
fi

if ((BUILD_OK)) && have_module pytest; then
  test_ignores
  XDIST=()
  have_module xdist && XDIST=(-n 4 --dist loadfile)
  OMP_NUM_THREADS=4 run tests "$(cap $TEST_CAP $((2 * SANITIZER_CAP + BENCH_MIN + MARGIN)))" "$OUT/tests.log" \
    "$PY" -m pytest tests -q -rfEs -p no:cacheprovider --junitxml="$OUT/pytest.xml" "${XDIST[@]}" "${IGNORES[@]}"
  tail -n 3 "$OUT/tests.log" | tee -a "$SUMMARY"
  if grep -q "needs a CUDA device" "$OUT/tests.log"; then
    fail "tests: CUDA tests were skipped (torch sees no device in the test processes)"
  fi

  if command -v compute-sanitizer >/dev/null; then
    later=$SANITIZER_CAP # racecheck's time, kept while memcheck runs
    for tool in memcheck racecheck; do
      # no caching allocator: every tensor its own allocation, so memcheck sees accesses past its end
      PYTORCH_NO_CUDA_MEMORY_CACHING=1 run "$tool" "$(cap $SANITIZER_CAP $((later + BENCH_MIN + MARGIN)))" \
        "$OUT/$tool.log" compute-sanitizer --tool "$tool" --error-exitcode 99 --target-processes all \
        --report-api-errors no --print-limit 50 --log-file "$OUT/$tool-report.log" \
        "$PY" -m pytest -q -p no:cacheprovider -k cuda "${SANITIZER_TESTS[@]}" "${IGNORES[@]}"
      grep -E "ERROR SUMMARY|RACECHECK SUMMARY" "$OUT/$tool-report.log" | tail -n 1 | sed "s/^/$tool: /" |
        tee -a "$SUMMARY"
      later=0
    done
  else
    fail "compute-sanitizer not found: memcheck and racecheck did not run"
  fi
fi

if ((BUILD_OK)); then
  # the PPL case first (the GPU target), then the rest; metrics cases are CPU work (scikit-learn)
  budget=$(($(left) - MARGIN))
  ((budget < BENCH_MIN)) && log "bench: only ${budget}s left (BENCH_MIN ${BENCH_MIN}s)"
  ppl_budget=$((budget / 2))
  run "bench ppl" "$((ppl_budget + 60))" "$OUT/bench-ppl.log" \
    "$PY" -m bench --device cuda --only 'ppl.*' --budget "$ppl_budget" --out-dir "$OUT"
  rest=$(($(left) - MARGIN))
  run "bench" "$((rest > 1 ? rest : 1))" "$OUT/bench.log" \
    "$PY" -m bench --device cuda --skip 'ppl.*,metrics.*' --budget "$((rest > 60 ? rest - 60 : 1))" --out-dir "$OUT"
  cat "$OUT/bench-ppl.log" "$OUT/bench.log" | grep -E "^[a-z0-9_]+\.[a-z0-9_]+ " | tee -a "$SUMMARY"
fi

log "done in $((SECONDS - START))s of ${BUDGET}s, status $STATUS; files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
exit $STATUS
