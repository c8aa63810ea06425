#!/usr/bin/env bash
# Runs libFuzzer harnesses built in BUILD (FP4C_FUZZ=ON) over their seed corpus (fuzz/corpus/<h>/)
# and regression seeds (fuzz/regressions/<h>/, every file replayed first).
#
#   fuzz/run.sh BUILD SECONDS [HARNESS...]            `make fuzz`: SECONDS each; new inputs kept in
#                                                       BUILD/fuzz-corpus/<h>/, crashes in
#                                                       BUILD/fuzz-artifacts/<h>/; all harnesses by default;
#                                                       FUZZ_JOBS of them at a time (default: nproc)
#   fuzz/run.sh --smoke BUILD SECONDS HARNESS         the CTest smoke run: a scratch corpus, removed after
#
# Exit status: 0 when every run ended clean; otherwise 1, with each finding's reproducer named.
# Reproduce one: BUILD/HARNESS FILE. Keep it (once fixed) as fuzz/regressions/HARNESS/NAME.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
smoke=0
if [ "${1:-}" = "--smoke" ]; then smoke=1; shift; fi
build="${1:?usage: fuzz/run.sh [--smoke] BUILD SECONDS [HARNESS...]}"
seconds="${2:?usage: fuzz/run.sh [--smoke] BUILD SECONDS [HARNESS...]}"
shift 2
build="$(cd "$build" && pwd)" || exit 2
harnesses=("$@")
if [ ${#harnesses[@]} -eq 0 ]; then
  for src in "$here"/*_fuzz.cpp; do harnesses+=("$(basename "$src" .cpp)"); done
fi

# Dictionaries: JSON-shaped inputs share one; pipeline text has its own.
dict_for() {
  case "$1" in
    pipeline_fuzz) echo "$here/dicts/pipeline.dict" ;;
    sentencepiece_fuzz|stats_fuzz|gguf_fuzz) ;;
    *) echo "$here/dicts/json.dict" ;;
  esac
}

run_one() {  # harness -> exit status of libFuzzer
  local h="$1" exe="$build/$1" work status
  [ -x "$exe" ] || { echo "fuzz: $exe is not built (cmake --build $build --target fuzz_harnesses)"; return 2; }
  local artifacts="$build/fuzz-artifacts/$h/"
  mkdir -p "$artifacts"
  if [ $smoke -eq 1 ]; then
    work="$(mktemp -d "${TMPDIR:-/tmp}/fp4c-fuzz-$h.XXXXXX")"
  else
    work="$build/fuzz-corpus/$h"
    mkdir -p "$work"
  fi
  local dirs=("$work")
  for d in "$here/corpus/$h" "$here/regressions/$h"; do [ -d "$d" ] && dirs+=("$d"); done
  local flags=(-max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 -artifact_prefix="$artifacts"
               -print_final_stats=1)
  local dict; dict="$(dict_for "$h")"
  [ -n "$dict" ] && flags+=(-dict="$dict")
  # Leaks found at exit are findings too (LeakSanitizer); reports name source lines.
  ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=0}" \
  UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}" \
    "$exe" "${flags[@]}" "${dirs[@]}"
  status=$?
  [ $smoke -eq 1 ] && rm -rf "$work"
  if [ $status -ne 0 ]; then
    echo "fuzz: $h FAILED (exit $status); reproducers:"
    ls -1 "$artifacts" 2>/dev/null | sed "s|^|  $artifacts|"
  fi
  return $status
}

if [ $smoke -eq 1 ]; then
  run_one "${harnesses[0]}"
  exit $?
fi

export -f run_one dict_for
export build seconds here smoke
jobs="${FUZZ_JOBS:-$(nproc)}"
logs="$build/fuzz-logs"
mkdir -p "$logs"
echo "fuzz: ${#harnesses[@]} harnesses, ${seconds}s each, $jobs at a time; logs in $logs/"
rm -f "$logs/status"
printf '%s\n' "${harnesses[@]}" | xargs -P "$jobs" -I{} bash -c 'run_one {} > "'"$logs"'/{}.log" 2>&1; echo "{} $?" >> "'"$logs"'/status"' 
failed=0
printf '%-34s %10s %8s %8s %s\n' harness execs cov ft result
for h in "${harnesses[@]}"; do
  log="$logs/$h.log"
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | tail -1 | grep -o '[0-9]*$')
  line=$(grep -E '^#[0-9]+.*(DONE|cov:)' "$log" | tail -1)
  cov=$(echo "$line" | grep -o 'cov: [0-9]*' | grep -o '[0-9]*')
  ft=$(echo "$line" | grep -o 'ft: [0-9]*' | grep -o '[0-9]*')
  status=$(grep "^$h " "$logs/status" | tail -1 | cut -d' ' -f2)
  result=clean
  if [ "${status:-1}" != 0 ]; then result="FAILED (see $log)"; failed=1; fi
  printf '%-34s %10s %8s %8s %s\n' "$h" "${execs:-?}" "${cov:-?}" "${ft:-?}" "$result"
done
rm -f "$logs/status"
exit $failed
