#!/usr/bin/env bash
# tests/cli.sh — the moecpu command line: exit codes and messages.
# Usage: tests/cli.sh MOECPU_BINARY   (RUNNER may hold an emulator prefix)
# Prints cmocka-style summary lines so scripts/run-tests.sh can count them.
set -u
bin=$1
runner=(${RUNNER:-})
pass=0 fail=0 failed=()

check() { # name expected_rc pattern [env=val] -- args...
  local name=$1 want=$2 pat=$3; shift 3
  local envs=()
  while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do envs+=("$1"); shift; done
  shift
  local out rc
  out=$(env "${envs[@]}" "${runner[@]}" "$bin" "$@" 2>&1); rc=$?
  if [ "$rc" -eq "$want" ] && printf '%s' "$out" | grep -qE -- "$pat"; then
    pass=$((pass + 1)); echo "[       OK ] $name"
  else
    fail=$((fail + 1)); failed+=("$name"); echo "[  FAILED  ] $name: exit $rc (wanted $want), output:"; printf '%s\n' "$out" | head -5
  fi
}

check "help"               0 "usage: moecpu"            -- help
check "no args"            2 "usage: moecpu"            --
check "unknown command"    2 "unknown command 'frob'"   -- frob
check "info"               0 "selected: +[a-z0-9_]+"    -- info
check "info --help"        0 "usage: moecpu info"       -- info --help
check "forced scalar"      0 "selected: +scalar \(forced" MOECPU_ISA=scalar -- info
check "unknown ISA"        1 "unknown ISA 'sse9'.*scalar" MOECPU_ISA=sse9 -- info
check "bench usage"        2 "expected 'kernels' or -m MODEL" -- bench
check "bench no model"     2 "-m MODEL is required"     -- bench -p 4
check "bench missing model" 1 "No such file|not found"             -- bench -m /nonexistent/model.gguf
check "bench bad option"   2 "unknown or incomplete option '--frob'" -- bench kernels --frob
check "bench bad isa"      2 "unknown ISA 'sse9'"       -- bench kernels --isa sse9
check "bench kernels help" 0 "--json"                   -- bench kernels --help
# tokenize, on a tiny hand-written byte-level BPE tokenizer ("Ġ" is the
# space byte, "Ċ" the newline byte; merges a+b)
tk=$(mktemp -d)
printf '%s' '{"added_tokens": [{"id": 4, "content": "<s>", "special": true, "normalized": false}],
 "normalizer": null, "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true},
 "decoder": {"type": "ByteLevel"}, "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2, "\u0120": 3, "<s>": 4,
 "\u010a": 5}, "merges": ["a b"]}}' > "$tk/tokenizer.json"
printf '%s' '{"add_bos_token": true, "bos_token": "<s>"}' > "$tk/tokenizer_config.json"
printf 'ab a\n' > "$tk/in.txt"
printf '4 2 3 0 5' > "$tk/ids.txt"
printf '4 2 x' > "$tk/badids.txt"
mkdir "$tk/empty" "$tk/garbage"; printf '{"model": ' > "$tk/garbage/tokenizer.json"
check "tokenize help"        0 "usage: moecpu tokenize"       -- tokenize --help
check "tokenize no model"    2 "-m MODEL is required"         -- tokenize --ids
check "tokenize bad option"  2 "unknown or incomplete option '--frob'" -- tokenize -m "$tk" --frob
check "tokenize missing"     1 "/nonexistent/x: No such file" -- tokenize -m /nonexistent/x
check "tokenize no json"     1 "empty/tokenizer.json: not found" -- tokenize -m "$tk/empty"
check "tokenize garbage"     1 "garbage/tokenizer.json: line" -- tokenize -m "$tk/garbage"
check "tokenize --ids"       0 "^4 2 3 0 5$"                  -- tokenize -m "$tk" --ids -f "$tk/in.txt"
check "tokenize --no-bos"    0 "^2 3 0 5$"                    -- tokenize -m "$tk" --ids --no-bos -f "$tk/in.txt"
check "tokenize pieces"      0 "^5	\\\\n$"                    -- tokenize -m "$tk" -f "$tk/in.txt"
check "tokenize special"     0 "^4	<s>$"                      -- tokenize -m "$tk" -f "$tk/in.txt"
check "tokenize --decode"    0 "^<s>ab a$"                    -- tokenize -m "$tk" --decode -f "$tk/ids.txt"
check "decode --no-special"  0 "^ab a$"                       -- tokenize -m "$tk" --decode --no-special -f "$tk/ids.txt"
check "decode bad id"        2 "entry 3 of the input is not a token id below 6" -- tokenize -m "$tk" --decode -f "$tk/badids.txt"
check "bench tokenizer help" 0 "usage: moecpu bench tokenizer" -- bench tokenizer --help
check "bench tokenizer args" 2 "-m MODEL and -f FILE are required" -- bench tokenizer -m "$tk"
rm -rf "$tk"
check "bad --mem-budget"   2 "--mem-budget 'lots' is not a size" -- eval -m x.gguf --token-ids 1 --logits-out y --mem-budget lots
check "bad --pager"        2 "--pager 'swap' unknown"   -- run -m x.gguf --token-ids 1 --print-ids --pager swap
check "bad --pager-policy" 2 "--pager-policy 'mru' unknown" -- bench -m x.gguf --pager-policy mru
check "bad --slot-prefault" 2 "--slot-prefault 'maybe' unknown" -- run -m x.gguf --slot-prefault maybe
check "pager help"         0 "--mem-budget SIZE"        -- eval --help
check "replay no trace"    2 "--trace FILE is required" -- bench pager-replay
# A B C A with room for 2 (hand-worked): LRU and freq evict A at C, the
# optimum evicts B (never used again) and hits A once
rt=$(mktemp)
printf '0 1 0\n1 1 1\n2 1 2\n3 1 0\n' > "$rt"
check "replay opt column"  0 '"capacity":2,"uses":4,"lru_hit_rate":0.0000,"freq_hit_rate":0.0000,"opt_hit_rate":0.2500' \
  -- bench pager-replay --trace "$rt" --fractions 0.67 --json
check "replay table"       0 'opt hit%'                 -- bench pager-replay --trace "$rt"
rm -f "$rt"
# A table that is built but not runnable must be an error, not SIGILL.
"${runner[@]}" "$bin" info > /tmp/moecpu-cli-info.$$ 2>&1
notrun=$(sed -n 's/^  \([a-z0-9_]*\) *NOT here.*/\1/p' /tmp/moecpu-cli-info.$$ | head -1)
rm -f /tmp/moecpu-cli-info.$$
if [ -n "$notrun" ]; then
  check "forced unrunnable $notrun" 1 "cannot run" MOECPU_ISA="$notrun" -- info
else
  echo "[  SKIPPED ] forced unrunnable table: this CPU runs every table built in"
  echo "[  SKIPPED ] 1 test(s)."
fi
echo "[  PASSED  ] $pass test(s)."
if [ "$fail" -gt 0 ]; then echo "[  FAILED  ] $fail test(s), listed below:"; printf '[  FAILED  ] %s\n' "${failed[@]}"; exit 1; fi
exit 0
