#!/usr/bin/env bash
# bench/attn-paths.sh — prefill speed of the two attention paths
# (`moecpu bench --attn absorbed|decompressed`) on attention-only models
# with the real head shapes of DeepSeek-V2-Lite (16 heads, no q LoRA) and
# V3 (128 heads, q LoRA 1536): kv_lora 512, qk_nope 128, qk_rope 64,
# v_head 128, hidden 2048, 2 dense layers with a tiny MLP, Q8_0.  For each
# prefill batch size T and prompt length P it prints pp tok/s of both paths
# (medians of -r runs, paths alternated), from which forward.c's rule
# (DEC_MIN_T) is taken.
#   bench/attn-paths.sh DIR [-r 2] [--threads 2]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=${1:?usage: bench/attn-paths.sh DIR [-r N] [--threads N]}; shift
R=2 THREADS=2
while [ $# -gt 0 ]; do case "$1" in -r) R=$2; shift 2 ;; --threads) THREADS=$2; shift 2 ;; *) echo "unknown $1" >&2; exit 2 ;; esac; done
(cd "$ROOT" && make -s moecpu build/gen_model)
mkdir -p "$DIR"
cp "$ROOT/moecpu" "$DIR/moecpu.attn"   # a private copy: rebuilding the tree must not change what is measured
trap 'rm -f "$DIR/moecpu.attn" "$DIR/attn-v2lite.gguf" "$DIR/attn-v3.gguf"' EXIT
common=(--layers 2 --dense 2 --inter 64 --hidden 2048 --kv-lora 512 --nope 128 --rope 64 --v-head 128 --vocab 512
        --format gguf-q8_0 --seed 1 --stream)
"$ROOT/build/gen_model" --style v2lite --heads 16 --q-lora 0 "${common[@]}" --out "$DIR/attn-v2lite.gguf" 2>/dev/null
"$ROOT/build/gen_model" --style v3 --heads 128 --q-lora 1536 "${common[@]}" --out "$DIR/attn-v3.gguf" 2>/dev/null
pp() { "$DIR/moecpu.attn" bench -m "$1" -p "$2" -n 0 -r 1 -t "$THREADS" --batch "$3" --attn "$4" --json |
       sed -n 's/.*"pp_tps":\([0-9.]*\).*/\1/p'; }
median() { sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
printf '%-8s %6s %6s %12s %14s %8s\n' heads P T absorbed decompressed ratio
for m in v2lite v3; do
    Ps="512 2048"; [ "$m" = v3 ] && Ps=512   # V3's 128 heads: absorbed at 2048 takes minutes
    for P in $Ps; do
        for T in 32 64 128 256 512; do
            [ "$T" -le "$P" ] || continue
            a=() d=()
            for r in $(seq 1 "$R"); do
                a+=("$(pp "$DIR/attn-$m.gguf" "$P" "$T" absorbed)")
                d+=("$(pp "$DIR/attn-$m.gguf" "$P" "$T" decompressed)")
            done
            am=$(printf '%s\n' "${a[@]}" | median) dm=$(printf '%s\n' "${d[@]}" | median)
            printf '%-8s %6d %6d %12.1f %14.1f %8.2f\n' "$m" "$P" "$T" "$am" "$dm" "$(awk -v x="$dm" -v y="$am" 'BEGIN {print x / y}')"
        done
    done
done
