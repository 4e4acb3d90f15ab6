#!/usr/bin/env bash
# scripts/bench-v2lite.sh — moecpu vs llama.cpp on a DeepSeek-V2-Lite-shaped
# model with random weights (the real V2-Lite dimensions: hidden 2048, 27
# layers, the first dense (intermediate 10944), 64 routed experts top-6 plus
# 2 shared of width 1408, 16 heads, kv_lora 512, qk_nope 128, qk_rope 64,
# v_head 128, vocabulary 102400, no q LoRA).
#
#   scripts/bench-v2lite.sh DIR [--rounds N] [--threads N] [-p 512] [-n 128] [--keep] [--skip-fp8]
#
# In one run: writes DIR/v2lite-q8_0.gguf (~16.6 GB) with build/gen_model
# --stream and the same weights as an FP8 Hugging Face directory
# DIR/v2lite-fp8 (~16.1 GB); then --rounds times: reads the GGUF into the
# page cache, runs `moecpu bench -m FILE -p 512 -n 128 -r 1` and llama.cpp
# (node-llama-cpp's prebuilt CPU binaries, scripts/llama-ref/bench.mjs:
# same protocol, same token ids) in alternating order, reads the FP8
# directory into the page cache and benches moecpu on it.  Prints every
# run and a table of medians.  Files are deleted at the end (and on
# failure) unless --keep.  On a shared machine, run it under a lock so
# benchmarks never overlap:  flock /work/bench.lock scripts/bench-v2lite.sh DIR
set -euo pipefail

die() { echo "bench-v2lite: $*" >&2; exit 1; }
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=""
ROUNDS=5 THREADS=2 P=512 N=128 KEEP=0 FP8=1 SEED=1 TINY=0
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS=${2:?}; shift 2 ;;
        --threads) THREADS=${2:?}; shift 2 ;;
        -p) P=${2:?}; shift 2 ;;
        -n) N=${2:?}; shift 2 ;;
        --keep) KEEP=1; shift ;;
        --skip-fp8) FP8=0; shift ;;
        --tiny) TINY=1; shift ;;   # smoke test of this script: a small model of the same style
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
        -*) die "unknown option $1" ;;
        *) [ -z "$DIR" ] || die "one directory only"; DIR=$1; shift ;;
    esac
done
[ -n "$DIR" ] || die "usage: scripts/bench-v2lite.sh DIR [--rounds N] [--threads N] [-p 512] [-n 128] [--keep] [--skip-fp8]"
mkdir -p "$DIR" || die "cannot create $DIR"
DIR=$(cd "$DIR" && pwd)
MOECPU=$ROOT/moecpu GEN=$ROOT/build/gen_model LLAMA=$ROOT/scripts/llama-ref/bench.mjs
(cd "$ROOT" && make -s moecpu build/gen_model) || die "build failed"
[ -d "$ROOT/scripts/llama-ref/node_modules/node-llama-cpp" ] || die "node-llama-cpp missing: run scripts/llama-ref/install.sh"
GGUF=$DIR/v2lite-q8_0.gguf HF=$DIR/v2lite-fp8
avail=$(df -Pk "$DIR" | awk 'NR == 2 {print $4}')
# the space check is skipped when --keep reuses both models from an earlier run
{ [ "$KEEP" = 1 ] && [ -e "$GGUF" ] && { [ "$FP8" = 0 ] || [ -e "$HF" ]; }; } || [ "$TINY" = 1 ] ||
    [ "$avail" -gt $(( (FP8 ? 35 : 18) * 1024 * 1024)) ] || die "$DIR: less than $((FP8 ? 35 : 18)) GB free"

# private copies: rebuilding the tree during the run must not change what is measured
cp "$MOECPU" "$DIR/moecpu.bench" && cp "$GEN" "$DIR/gen_model.bench" || die "cannot copy the binaries to $DIR"
MOECPU=$DIR/moecpu.bench GEN=$DIR/gen_model.bench
cleanup() { rm -f "$DIR/moecpu.bench" "$DIR/gen_model.bench"; [ "$KEEP" = 1 ] || rm -rf "$GGUF" "$GGUF.tmp" "$HF"; }
trap cleanup EXIT

DIMS=(--style v2lite --seed "$SEED" --vocab 102400 --hidden 2048 --layers 27 --dense 1 --inter 10944
      --experts 64 --topk 6 --n-group 1 --topk-group 1 --shared 2 --moe-inter 1408 --heads 16 --q-lora 0
      --kv-lora 512 --nope 128 --rope 64 --v-head 128 --stream)
[ "$TINY" = 1 ] && DIMS=(--style v2lite --seed "$SEED" --hidden 256 --heads 4 --kv-lora 64 --nope 32 --rope 32
                        --v-head 32 --stream)
json_field() { sed -n "s/.*\"$1\":\([0-9.eE+-]*\).*/\1/p"; }
median() { sort -g | awk '{a[NR] = $1} END {if (NR) print a[int((NR + 1) / 2)]; else print "nan"}'; }
LOG=$(mktemp)
trap 'rm -f "$LOG"; cleanup' EXIT

gen() {   # format out
    local t0=$SECONDS
    [ -e "$2" ] && [ "$KEEP" = 1 ] && { echo "reusing $2"; return; }
    echo "generating $2 ..."
    "$GEN" "${DIMS[@]}" --format "$1" --out "$2"
    echo "  $(du -sh "$2" | cut -f1) in $((SECONDS - t0)) s"
}
# read every byte once (counted through a pipe, not written to /dev/null:
# on a machine where /dev/null was replaced by a plain file that fills the disk)
# First drop the files' page cache (as a reboot would): what the generator
# just wrote is cached in small folios, which map with 4 KiB pages; read back,
# the cache is 2 MiB folios that any process maps with 2 MiB pages (both
# engines; decode ~10% faster, see README).
warm() {
    find "$1" -type f -exec dd if={} iflag=nocache count=0 status=none \; || die "cannot drop the page cache of $1"
    echo "warming $1: $(find "$1" -type f -exec cat {} + | wc -c) bytes read"
}

run_moecpu() {   # tag model
    local out
    out=$("$MOECPU" bench -m "$2" -p "$P" -n "$N" -r 1 -t "$THREADS" --json)
    echo "  moecpu    $1: $out"
    echo "$1 moecpu $(echo "$out" | json_field pp_tps) $(echo "$out" | json_field tg_tps) $(echo "$out" | json_field tg_bound_tps) $(echo "$out" | json_field tg_fraction_of_bound) $(echo "$out" | json_field read_bw_gbps)" >>"$LOG"
}
run_llama() {
    local out
    out=$(node "$LLAMA" "$2" -p "$P" -n "$N" -r 1 -t "$THREADS" --json)
    echo "  llama.cpp $1: $out"
    echo "$1 llama $(echo "$out" | json_field pp_tps) $(echo "$out" | json_field tg_tps) 0 0" >>"$LOG"
}

# Every round benches both files, so FP8 and Q8_0 are compared minutes, not
# a quarter of an hour, apart (this machine's memory bandwidth drifts by tens
# of percent within an hour).  Both do not fit in RAM together: each is read
# back into the page cache before its runs.
gen gguf-q8_0 "$GGUF"
[ "$FP8" = 1 ] && gen hf-fp8 "$HF"
for r in $(seq 1 "$ROUNDS"); do
    echo "round $r/$ROUNDS"
    if [ "$FP8" = 1 ] || [ "$r" = 1 ]; then warm "$GGUF"; fi
    if [ $((r % 2)) = 1 ]; then run_moecpu q8_0 "$GGUF"; run_llama q8_0 "$GGUF"
    else run_llama q8_0 "$GGUF"; run_moecpu q8_0 "$GGUF"; fi
    if [ "$FP8" = 1 ]; then warm "$HF"; run_moecpu fp8 "$HF"; fi
done

col() { awk -v t="$1" -v e="$2" -v c="$3" '$1 == t && $2 == e {print $c}' "$LOG" | median; }
echo
echo "DeepSeek-V2-Lite-shaped random model, $THREADS threads, pp$P / tg$N, medians of $ROUNDS runs"
printf '%-10s %-10s %10s %10s %14s %10s\n' engine weights "pp$P" "tg$N" "tg bound" "of bound"
for row in "moecpu q8_0" "llama q8_0" "moecpu fp8"; do
    set -- $row
    [ "$2" = fp8 ] && [ "$FP8" = 0 ] && continue
    pp=$(col "$2" "$1" 3) tg=$(col "$2" "$1" 4) bd=$(col "$2" "$1" 5) fr=$(col "$2" "$1" 6)
    name=$1; [ "$1" = llama ] && name=llama.cpp
    if [ "$1" = moecpu ]; then
        printf '%-10s %-10s %10.2f %10.2f %14.2f %9.0f%%\n' "$name" "$2" "$pp" "$tg" "$bd" "$(awk -v f="$fr" 'BEGIN {print 100 * f}')"
    else
        printf '%-10s %-10s %10.2f %10.2f %14s %10s\n' "$name" "$2" "$pp" "$tg" - -
    fi
done
if [ "$FP8" = 1 ]; then
    awk -v a="$(col fp8 moecpu 4)" -v b="$(col q8_0 moecpu 4)" 'BEGIN {printf "moecpu FP8 decode / Q8_0 decode: %.0f%% (medians)\n", 100 * a / b}'
    # per round (the runs of a round are minutes apart) ...
    awk '$2 == "moecpu" && $1 == "q8_0" {q[++nq] = $4} $2 == "moecpu" && $1 == "fp8" {f[++nf] = $4}
         END {for (i = 1; i <= nf && i <= nq; i++) print f[i] / q[i]}' "$LOG" |
        median | awk '{printf "  median of the rounds'"'"' ratios: %.0f%%\n", 100 * $1}'
    # ... and at equal memory bandwidth: tokens/s per GB/s probed around each run
    tpb() { awk -v t="$1" '$1 == t && $2 == "moecpu" && $7 > 0 {print $4 / $7}' "$LOG" | median; }
    awk -v a="$(tpb fp8)" -v b="$(tpb q8_0)" 'BEGIN {printf "  at equal read bandwidth (tok/s per GB/s, medians): %.0f%%\n", 100 * a / b}'
fi
