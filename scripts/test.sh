#!/usr/bin/env bash
# `make test`'s test step: every test binary runs even when one fails (--no-fail-fast), and
# the end says in one place what failed, so one red run shows everything that is red.
set -uo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp)
trap 'rm -f "$log"' EXIT
"${CARGO:-cargo}" test --workspace --no-fail-fast "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
# `test NAME ... FAILED` lines name the tests; "error: test failed, to rerun pass `--test X`"
# names binaries that failed without a test line (a crash, a build error).
failed=$(sed -n 's/^test \(.*\) \.\.\. FAILED$/\1/p' "$log" | sort -u | paste -sd' ' -)
binaries=$(sed -n 's/.*to rerun pass `\(.*\)`$/\1/p' "$log" | sort -u | paste -sd',' -)
read -r passed failures < <(awk '/^test result: /{
  for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i }
} END { print p + 0, f + 0 }' "$log")
echo
if [ "$status" -ne 0 ]; then
  echo "FAILED: ${failed:-no test named} (binaries: ${binaries:-?})"
fi
echo "tests: ${passed:-0} passed, ${failures:-0} failed"
exit "$status"
