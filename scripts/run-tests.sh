#!/usr/bin/env bash
# Run cmocka test binaries and print one summary line for CI:
#   "N passed, N failed, N skipped"
# Usage: scripts/run-tests.sh [--qemu] TEST...
#   TEST     a cmocka test binary, or a tests/*.sh script that is given
#            $MOECPU_BIN (the moecpu binary) and prints cmocka-style lines
#   --qemu   run aarch64 binaries under qemu-aarch64-static with CPU model
#            $QEMU_CPU (default max).
set -u
qemu=()
if [ "${1:-}" = "--qemu" ]; then
  shift
  qemu=(qemu-aarch64-static -L /usr/aarch64-linux-gnu -cpu "${QEMU_CPU:-max}")
fi
pass=0 fail=0 skip=0 status=0
for bin in "$@"; do
  label="$bin${qemu:+ (qemu -cpu ${QEMU_CPU:-max})}"
  echo "=== $label"
  case "$bin" in
    *.sh) out=$(RUNNER="${qemu[*]}" bash "$bin" "${MOECPU_BIN:-./moecpu}" 2>&1) ;;
    *)    out=$("${qemu[@]}" "$bin" 2>&1) ;;
  esac
  rc=$?
  printf '%s\n' "$out"
  p=$(printf '%s\n' "$out" | sed -n 's/.*\[  PASSED  \] \([0-9]*\) test.*/\1/p' | awk '{s+=$1} END {print s+0}')
  f=$(printf '%s\n' "$out" | sed -n 's/.*\[  FAILED  \] \([0-9]*\) test.*/\1/p' | awk '{s+=$1} END {print s+0}')
  s=$(printf '%s\n' "$out" | sed -n 's/.*\[  SKIPPED \] \([0-9]*\) test.*/\1/p' | awk '{s+=$1} END {print s+0}')
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
    echo "!!! $label exited with status $rc"
    f=1
  fi
  pass=$((pass + p)); fail=$((fail + f)); skip=$((skip + s))
  [ "$f" -eq 0 ] || status=1
done
echo "$pass passed, $fail failed, $skip skipped"
# make test adds up the runs (native, sanitizers, clang, qemu) in this file
[ -n "${MOECPU_TEST_TALLY:-}" ] && echo "$pass $fail $skip" >> "$MOECPU_TEST_TALLY"
exit $status
