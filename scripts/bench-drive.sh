#!/usr/bin/env bash
# Benchmark the Google Drive store's memory and speed against the fake Drive v3 server of the
# tests (tests/integration/support/fake_drive.rs: resumable uploads, ranged downloads, over
# loopback HTTP): a full backup of a site with the store's defaults (part_size 64MiB,
# chunk_size 8MiB, parallel_uploads 2), then its restore; wall time and peak RSS of coffer
# (GNU time -v), the median of BENCH_REPS runs. The fake runs in the test harness's process,
# so its memory is not coffer's. (No other tool speaks to the fake: the side-by-side figures
# of other tools are in scripts/bench-s3.sh and scripts/bench.sh.)
#
# Usage: scripts/bench-drive.sh   (needs /usr/bin/time, and the site of scripts/bench-s3.sh)
#
# Environment: BENCH_SITE (default /tmp/coffer-bench-s3/site: run scripts/bench-s3.sh once, or
# point it at any folder), BENCH_REPS (default 3), COFFER_BIN (default: cargo build --release
# --locked, target/release/coffer).
# Results: Markdown on stdout.
set -euo pipefail
export LC_ALL=C

if [[ ${1:-} == -h || ${1:-} == --help ]]; then
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
    exit 0
fi
cd "$(dirname "${BASH_SOURCE[0]}")/.."
die() { printf 'bench-drive.sh: %s\n' "$*" >&2; exit 1; }
SITE=${BENCH_SITE:-/tmp/coffer-bench-s3/site}
REPS=${BENCH_REPS:-3}
[[ -d $SITE ]] || die "no site at $SITE: run scripts/bench-s3.sh once, or set BENCH_SITE"
[[ -x /usr/bin/time ]] || die "GNU time is missing (apt-get install time)"
if [[ -z ${COFFER_BIN:-} ]]; then
    cargo build --release --locked >&2
    COFFER_BIN=$PWD/target/release/coffer
fi
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT
BENCH_SITE=$SITE BENCH_OUT=$OUT BENCH_REPS=$REPS COFFER_BIN=$COFFER_BIN \
    cargo test --locked --test integration -- --ignored --exact \
    gdrive::bench_drive_backup_and_restore >&2

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
size=$(du -sm "$SITE" | cut -f1)
echo "| coffer to the fake Drive ($size MiB site, median of $REPS) | time (s) | peak RSS (MiB) |"
echo "|---|---|---|"
for what in backup restore; do
    t=$(awk -v w="drive-$what-" 'index($1, w) == 1 {print $2}' "$OUT" | median)
    r=$(awk -v w="drive-$what-" 'index($1, w) == 1 {print $3}' "$OUT" | median)
    echo "| $what | $t | $((r / 1024)) |"
done
