#!/usr/bin/env bash
# scripts/bench-pager.sh — decode speed on a model larger than RAM: moecpu
# with the expert pager (each I/O mode), moecpu with the pager off (plain
# mmap), and llama.cpp (node-llama-cpp, scripts/llama-ref) on the same GGUF,
# plus the storage bound measured in the same run.
#
#   scripts/bench-pager.sh MODEL.gguf [N_TOKENS=32] [BUDGET=16G] [ROUNDS=1]
#   CONFIGS="direct pread mmap off llama" (default): pager modes, off = plain
#   mmap, llama = llama.cpp; MODE+laN adds --lookahead N, MODE+ioN --io-threads N,
#   MODE+nopf --slot-prefault off (suffixes combine: direct+la0+nopf).  STREAMS=16: parallel streams of the disk probe.
#   IDS=FILE: every engine decodes the first N token ids of FILE (e.g. scripts/text-ids.sh's ids
#   of a real text) instead of the pseudo-random ones.
#
# Every run starts with the model's page cache dropped (dd iflag=nocache,
# no root needed) and WARM_GIB GiB of memory touched (see warm_mem), and is
# wrapped in flock /work/bench.lock (or $BENCH_LOCK).
# Per run it prints tokens/s of N single-token decode steps from position 0
# (pseudo-random ids, or IDS's, the same for every engine) and the bytes the process
# read from storage per token (getrusage inblock x 512, via /usr/bin/time:
# includes loading the non-expert weights).  The disk bound is the O_DIRECT
# sequential read speed of 4 GiB of the file (dd) divided by the routed
# bytes the pager missed per token; the overlap bound also counts compute:
# one token over the longer of its reads (disk bound) and its weights read
# from RAM at the bandwidth moecpu bench probes around the run (its memory
# bound), i.e. what perfect overlap of the two would give.  At the end: each moecpu run's tokens/s
# over the median of the invocation's llama.cpp runs.  Generate the model with, e.g.:
#   build/gen_model --style v3 --format gguf-q8_0 --seed 2026 --out big.gguf --hidden 7168 \
#     --moe-inter 2048 --experts 256 --topk 8 --n-group 8 --topk-group 4 --layers 4 --dense 1 \
#     --inter 2048 --heads 16 --q-lora 1536 --kv-lora 512 --nope 128 --rope 64 --v-head 128 \
#     --vocab 1024 --zipf 0.05 --stream-experts
# (36 GB, 1.6x this machine's RAM; with --layers 5 the 48 GB model of README's rounds 43-47,
# and with --layers 5 --experts 208 the 40 GB one of rounds 48-54; each takes ~2 min.)
set -u
model=${1:?usage: scripts/bench-pager.sh MODEL.gguf [N_TOKENS] [BUDGET] [ROUNDS]}
n=${2:-32}
budget=${3:-16G}
rounds=${4:-1}
lock=${BENCH_LOCK:-/work/bench.lock}
bin=${MOECPU_BIN:-./moecpu}
threads=${THREADS:-2}
configs=${CONFIGS:-"direct pread mmap off llama"}
ids_opt=()
if [ -n "${IDS:-}" ]; then
  [ -r "$IDS" ] || { echo "bench-pager: cannot read IDS file '$IDS'" >&2; exit 2; }
  ids_opt=(--token-ids-file "$IDS")
fi

drop() { dd if="$model" iflag=nocache count=0 status=none; }

# This VM hands memory the guest frees back to its host within seconds, and
# the next first touch of it runs at 0.3-0.4 GB/s (measured: 8 GiB touched
# after 15 s idle took 21 s, touched again right after 4 s; a bare-metal
# machine zeroes at several GB/s).  Every engine needs fresh memory (the
# pager's slots, llama.cpp's page cache), so before every run, whatever
# the engine, a separate process touches WARM_GIB GiB and exits: each run
# starts from the same state, the one a machine without this behaviour is
# always in.  WARM_GIB=0 skips it (cold memory, as before 2026-12-02).
# Default: 17 GiB, at most the machine's RAM less 6 GiB.
ram_gib=$(awk '/^MemTotal:/ {print int($2 / 1048576)}' /proc/meminfo)
warm_gib=${WARM_GIB:-$(( ram_gib - 6 < 17 ? (ram_gib - 6 > 0 ? ram_gib - 6 : 0) : 17 ))}
case "$warm_gib" in
  ''|*[!0-9]*) echo "bench-pager: WARM_GIB must be a whole number of GiB, not '$warm_gib'" >&2; exit 2 ;;
esac
warm_mem() {
  [ "$warm_gib" -gt 0 ] || return 0
  node -e 'const a = []; for (let i = 0; i < +process.argv[1]; i++) a.push(Buffer.alloc(1 << 30, 1));' "$warm_gib" ||
    echo "bench-pager: touching $warm_gib GiB failed (WARM_GIB smaller, or 0 to skip)" >&2
}

streams=${STREAMS:-16}
disk_bw() { # GB/s of O_DIRECT reads: $streams parallel streams of 4 MiB blocks, 4 GiB in all (16 streams read
            # faster than 8 here: the probe is what this disk can do with deep queues, as the pager's I/O threads)
  local blocks per t0 t1
  blocks=$(( $(stat -c %s "$model") / 4194304 ))
  per=$(( blocks / streams < 1024 / streams ? blocks / streams : 1024 / streams ))
  t0=$(date +%s.%N)
  flock "$lock" bash -c "for i in \$(seq 0 $((streams - 1))); do dd if='$model' of=/dev/null bs=4M count=$per skip=\$(( i * $blocks / $streams )) iflag=direct status=none & done; wait"
  t1=$(date +%s.%N)
  awk -v b=$(( per * streams * 4194304 )) -v a="$t0" -v z="$t1" 'BEGIN {printf "%.3f", b / (z - a) / 1e9}'
}

run() { # config -> one line: config tps bytes_per_token missed_per_token
  local cfg=$1 tps inb miss wall mbound=NA
  local tmp; tmp=$(mktemp)
  drop
  warm_mem
  if [ "$cfg" = llama ]; then
    flock "$lock" /usr/bin/time -f "INBLOCK %I WALL %e" node bench/llama-decode.mjs "$model" -n "$n" --threads "$threads" \
      "${ids_opt[@]}" > "$tmp.out" 2> "$tmp"
    tps=$(sed -n 's/.*"tg_tps":\([0-9.e+-]*\).*/\1/p' "$tmp.out")
    miss=NA
  else
    local opts=(--pager "${cfg%%+*}") suf    # MODE[+laN][+ioN]
    for suf in $(echo "${cfg#*+}" | tr + ' '); do
      [ "$suf" = "$cfg" ] && break
      case "$suf" in la*) opts+=(--lookahead "${suf#la}") ;; io*) opts+=(--io-threads "${suf#io}") ;;
                     nopf) opts+=(--slot-prefault off) ;; esac
    done
    [ "$cfg" = off ] || opts+=(--mem-budget "$budget" --pager-stats)
    flock "$lock" /usr/bin/time -f "INBLOCK %I WALL %e" "$bin" bench -m "$model" -p 0 -n "$n" -r 1 -t "$threads" --json \
      "${opts[@]}" "${ids_opt[@]}" > "$tmp.out" 2> "$tmp"
    tps=$(sed -n 's/.*"tg_tps":\([0-9.e+-]*\).*/\1/p' "$tmp.out")
    mbound=$(sed -n 's/.*"tg_bound_tps":\([0-9.e+-]*\).*/\1/p' "$tmp.out")
    miss=$(sed -n 's/.*, total: .* read \([0-9.]*\) MiB .*/\1/p' "$tmp" | awk -v n="$n" '{printf "%.1f", $1 * 1048576 / n / 1e6}')
    [ -n "$miss" ] || miss=NA
    grep -E "total:" "$tmp" >&2
  fi
  inb=$(sed -n 's/^INBLOCK \([0-9]*\).*/\1/p' "$tmp")
  wall=$(sed -n 's/^INBLOCK .* WALL \([0-9.]*\)/\1/p' "$tmp")
  if [ -z "$tps" ]; then echo "bench-pager: $cfg failed:" >&2; cat "$tmp" "$tmp.out" >&2; rm -f "$tmp" "$tmp.out"; return 1; fi
  printf '%s %s %s %s %s %s\n' "$cfg" "$tps" "$(awk -v b="$inb" -v n="$n" 'BEGIN {printf "%.1f", b * 512 / n / 1e6}')" "$miss" "$wall" "${mbound:-NA}"
  rm -f "$tmp" "$tmp.out"
}

echo "model $model ($(du -h --apparent-size "$model" | cut -f1)), RAM $(free -g | awk '/Mem:/ {print $2}') GiB," \
     "$n decode tokens, budget $budget, $threads threads"
printf '%-8s %10s %14s %14s %10s %12s\n' config tok/s "MB read/tok" "MB missed/tok" disk-GB/s "wall s (all)"
results=()
for _ in $(seq "$rounds"); do
  for cfg in $configs; do
    bw=$(disk_bw)
    line=$(run "$cfg") || continue
    set -- $line
    printf '%-8s %10.3f %14s %14s %10s %12s\n' "$1" "$2" "$3" "$4" "$bw" "$5"
    results+=("$1 $2")
    if [ "$4" != NA ]; then
      awk -v t="$2" -v m="$4" -v b="$bw" 'BEGIN {bound = b * 1e3 / m; printf "         storage bound %.3f tok/s: %.0f%% of it\n", bound, 100 * t / bound}'
      # With the memory bound of the same run (moecpu bench: read bandwidth / weight bytes a token
      # touches): a token takes at least the longer of its disk reads and its compute from RAM.
      [ "$6" = NA ] || awk -v t="$2" -v m="$4" -v b="$bw" -v mb="$6" 'BEGIN {
        d = m / (b * 1e3); c = 1 / mb; bound = 1 / (d > c ? d : c)
        printf "         overlap bound %.3f tok/s (disk %.1f, memory %.1f ms/token): %.0f%% of it\n", bound, 1e3 * d, 1e3 * c, 100 * t / bound }'
    fi
  done
done
# Each moecpu run against llama.cpp: tok/s over the median of the llama runs of this invocation.
printf '%s\n' "${results[@]}" | awk '
  $1 == "llama" { l[++n] = $2; next } { c[++m] = $1; t[m] = $2 }
  END {
    if (!n || !m) exit
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (l[j] < l[i]) { x = l[i]; l[i] = l[j]; l[j] = x }
    med = n % 2 ? l[(n + 1) / 2] : (l[n / 2] + l[n / 2 + 1]) / 2
    printf "against llama.cpp (median of %d run%s, %.3f tok/s):\n", n, (n > 1 ? "s" : ""), med
    for (i = 1; i <= m; i++) printf "  %-8s %.2fx\n", c[i], t[i] / med
  }'
