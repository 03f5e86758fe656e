#!/usr/bin/env bash
# Runs scenario test files N times in a row on this machine and prints, per test, how often it
# passed: scripts/soak-tests.sh N [FILE ...] (default: every scenario file on the local
# cluster). Logs of failed runs are kept in target/soak/.
set -uo pipefail
cd "$(dirname "$0")/.."
runs=${1:?usage: scripts/soak-tests.sh N [failover cluster operator backup security monitoring]}
shift
files=("$@")
[ ${#files[@]} -gt 0 ] || files=(failover cluster operator backup security monitoring)
cargo=${CARGO:-cargo}
out=target/soak
mkdir -p "$out"
for f in "${files[@]}"; do
  "$cargo" test --no-run --test "$f" >/dev/null 2>&1 || { echo "tests/$f.rs does not build" >&2; exit 2; }
done
declare -A passed failed
for ((run = 1; run <= runs; run++)); do
  for f in "${files[@]}"; do
    log="$out/$f-$run.log"
    "$cargo" test --test "$f" >"$log" 2>&1
    while read -r name result; do
      key="$f::$name"
      if [ "$result" = ok ]; then passed[$key]=$((${passed[$key]:-0} + 1)); else failed[$key]=$((${failed[$key]:-0} + 1)); fi
    done < <(sed -n 's/^test \(.*\) \.\.\. \(ok\|FAILED\)$/\1 \2/p' "$log")
    grep -q '^test .* \.\.\. FAILED$' "$log" || rm -f "$log"
    echo "run $run/$runs tests/$f.rs done" >&2
  done
done
printf '%-90s %s\n' "test" "passed/runs"
for key in $(printf '%s\n' "${!passed[@]}" "${!failed[@]}" | sort -u); do
  printf '%-90s %d/%d\n' "$key" "${passed[$key]:-0}" "$((${passed[$key]:-0} + ${failed[$key]:-0}))"
done
