#!/usr/bin/env bash
# A/B: two coffer binaries back up and restore the same site, alternating, in the same run:
# what a change costs in speed and memory, measured on the same machine at the same time.
#
# Usage: scripts/bench-ab.sh BIN_A BIN_B
#        (e.g. two release builds: git worktree add /tmp/a OLD && cargo build --release there)
#
# Environment:
#   BENCH_DIR  work folder of scripts/bench.sh (default /tmp/coffer-bench): its generated site
#              and key are reused; run scripts/bench.sh once first to make them
#   AB_RUNS    rounds (default 5); each round runs A then B, or B then A (alternating), each a
#              backup into an empty store and a restore of it, checked with diff -r
#
# Results: a Markdown table on stdout (median and range of the wall times, peak RSS);
# GNU time reports in $BENCH_DIR/ab/.
set -euo pipefail
export LC_ALL=C

if [[ ${1:-} == -h || ${1:-} == --help || $# -ne 2 ]]; then
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
    [[ $# -eq 2 ]] && exit 0 || exit 2
fi

die() { printf 'bench-ab.sh: error: %s\n' "$*" >&2; exit 1; }
log() { printf '==> %s\n' "$*" >&2; }

BENCH_DIR=${BENCH_DIR:-/tmp/coffer-bench}
AB_RUNS=${AB_RUNS:-5}
[[ $AB_RUNS =~ ^[1-9][0-9]*$ ]] || die "AB_RUNS must be a positive integer (got '$AB_RUNS')"
SITE=$BENCH_DIR/site
KEY=$BENCH_DIR/key.txt
[[ -d $SITE && -f $KEY ]] || die "no site in $BENCH_DIR: run scripts/bench.sh once first (BENCH_SIZE_MB=... for a smaller one)"
[[ -x /usr/bin/time ]] || die "/usr/bin/time is missing (Debian package 'time')"
declare -A BIN=([A]=$1 [B]=$2)
for k in A B; do
    [[ -x ${BIN[$k]} ]] || die "binary $k (${BIN[$k]}) is not executable"
done

WORK=$BENCH_DIR/ab
rm -rf "$WORK"
mkdir -p "$WORK"
RECIPIENT=$(age-keygen -y "$KEY")
for k in A B; do
    cat >"$WORK/$k.toml" <<TOML
state_dir = "$WORK/$k-state"

[encryption]
recipients = ["$RECIPIENT"]
identity_file = "$KEY"

[store]
type = "local"
path = "$WORK/$k-store"
part_size = "64MiB"

[compression]
level = 6

[[source]]
name = "files"
type = "directory"
path = "$SITE"
TOML
done

# timed KEY RUN CMD...: wall seconds and peak RSS (KiB) of CMD into $WORK/KEY.RUN.time.
timed() {
    local key=$1 run=$2
    shift 2
    /usr/bin/time -v -o "$WORK/$key.$run.time" "$@" >"$WORK/$key.$run.log" 2>&1 ||
        die "$key run $run failed: see $WORK/$key.$run.log"
}

one() {
    local k=$1 run=$2
    rm -rf "$WORK/$k-store" "$WORK/$k-state" "$WORK/$k-restored"
    timed "$k-backup" "$run" "${BIN[$k]}" --config "$WORK/$k.toml" backup
    timed "$k-restore" "$run" "${BIN[$k]}" --config "$WORK/$k.toml" restore latest --to "$WORK/$k-restored"
    diff -r "$SITE" "$WORK/$k-restored" >/dev/null || die "$k run $run: the restore differs from the site"
    rm -rf "$WORK/$k-store" "$WORK/$k-state" "$WORK/$k-restored"
}

sync
for ((run = 1; run <= AB_RUNS; run++)); do
    if ((run % 2)); then order=(A B); else order=(B A); fi
    for k in "${order[@]}"; do
        log "round $run/$AB_RUNS: $k"
        one "$k" "$run"
    done
done

# wall seconds of a GNU time report ("Elapsed (wall clock) time (h:mm:ss or m:ss): 0:07.21")
wall() { awk -F': ' '/Elapsed/ {n = split($2, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; print s}' "$1"; }
rss() { awk -F': ' '/Maximum resident/ {print $2}' "$1"; }
stats() { # KEY: "median (min–max)" of the wall times, and the peak RSS in MiB
    local key=$1 f
    local walls=() peaks=()
    for f in "$WORK/$key".*.time; do
        walls+=("$(wall "$f")")
        peaks+=("$(rss "$f")")
    done
    printf '%s\n' "${walls[@]}" | sort -g | awk '{v[NR] = $1} END {m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.2f (%.2f–%.2f)", m, v[1], v[NR]}'
    printf ' | '
    printf '%s\n' "${peaks[@]}" | sort -g | tail -1 | awk '{printf "%.1f", $1 / 1024}'
}

median() { # KEY: the median wall time alone
    local f
    for f in "$WORK/$1".*.time; do wall "$f"; done | sort -g |
        awk '{v[NR] = $1} END {print NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}

echo "| build | backup median s (range) | backup peak RSS MiB | restore median s (range) | restore peak RSS MiB |"
echo "|---|---:|---:|---:|---:|"
for k in A B; do
    echo "| $k: $("${BIN[$k]}" --version) (${BIN[$k]}) | $(stats "$k-backup") | $(stats "$k-restore") |"
done
echo
for op in backup restore; do
    awk -v a="$(median "A-$op")" -v b="$(median "B-$op")" -v op="$op" \
        'BEGIN {printf "- %s: B / A median wall time %.3f (%+.1f%%)\n", op, b / a, (b / a - 1) * 100}'
done
echo "- $AB_RUNS rounds, alternating order; site $(du -sh "$SITE" | cut -f1)"
