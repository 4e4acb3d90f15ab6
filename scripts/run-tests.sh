#!/usr/bin/env bash
# Run cmocka test binaries and print one summary line for CI:
#   "N passed, N failed, N skipped"
# Usage: scripts/run-tests.sh [--qemu] BIN...
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
  out=$("${qemu[@]}" "$bin" 2>&1)
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
exit $status
