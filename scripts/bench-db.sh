#!/usr/bin/env bash
# Benchmark coffer's database path against `pg_dump | gzip -6 | age` and
# `age -d | gunzip | psql --single-transaction` on a generated PostgreSQL database.
#
# Usage: scripts/bench-db.sh   (PostgreSQL on 127.0.0.1:5432, user postgres, trust auth;
#                               installs age with apt-get when run as root)
#
# Environment:
#   BENCH_ROWS   rows in the generated table (default 2000000; about 190 bytes of SQL each)
#   BENCH_RUNS   runs per measured command (default 3); the median wall time is reported,
#                peak RSS is the maximum over runs
#   BENCH_DIR    work folder (default /tmp/coffer-bench-db)
#   COFFER_BIN   coffer binary; if unset, `cargo build --release --locked` is run
#
# Measures: backup (coffer with exact row counts; coffer with estimates only, which shows
# what counting costs; the shell baseline) and restore into a fresh database (coffer's
# --db-url restore, which also counts every restored table; the shell baseline).
set -euo pipefail
export LC_ALL=C

BENCH_ROWS=${BENCH_ROWS:-2000000}
BENCH_RUNS=${BENCH_RUNS:-3}
BENCH_DIR=${BENCH_DIR:-/tmp/coffer-bench-db}
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PG="psql -h 127.0.0.1 -U postgres -v ON_ERROR_STOP=1 -qtA"

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'bench-db.sh: error: %s\n' "$*" >&2; exit 1; }

[[ $BENCH_ROWS =~ ^[1-9][0-9]*$ ]] || die "BENCH_ROWS must be a positive integer"
[[ $BENCH_RUNS =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS must be a positive integer"
if ! command -v age >/dev/null; then
    [[ $(id -u) -eq 0 ]] || die "age is missing: sudo apt-get install -y age"
    apt-get install -y -qq age >&2 || { apt-get update -qq >&2 && apt-get install -y -qq age >&2; }
fi
[[ -x /usr/bin/time ]] || die "GNU time is missing: apt-get install -y time"
$PG -d postgres -c 'SELECT 1' >/dev/null || die "PostgreSQL is not reachable on 127.0.0.1:5432"

if [[ -z ${COFFER_BIN:-} ]]; then
    log "building coffer (cargo build --release --locked)"
    (cd "$REPO_ROOT" && cargo build --release --locked >&2)
    COFFER_BIN=$REPO_ROOT/target/release/coffer
fi

rm -rf "$BENCH_DIR"
mkdir -p "$BENCH_DIR/logs"
cd "$BENCH_DIR"
SRC=coffer_bench_src
STG=coffer_bench_stg
BASE=coffer_bench_base
DRILL=coffer_bench_drill
drop() { $PG -d postgres -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" >/dev/null 2>&1 || true; }
trap 'drop $SRC; drop $STG; drop $BASE; drop $DRILL' EXIT
drop $DRILL

log "generating $BENCH_ROWS rows"
drop $SRC
$PG -d postgres -c "CREATE DATABASE $SRC" >/dev/null
$PG -d $SRC <<SQL >/dev/null
CREATE TABLE "tabSales Invoice" (id bigserial PRIMARY KEY, customer text, note text,
    amount numeric(18,6), doc jsonb, at timestamptz, flag boolean);
INSERT INTO "tabSales Invoice" (customer, note, amount, doc, at, flag)
SELECT 'CUST-' || (i % 5000), 'note ' || md5(i::text) || ' ' || repeat('x', i % 40),
       (i * 1.37)::numeric(18,6), jsonb_build_object('i', i, 'tag', i % 7),
       timestamptz '2026-01-01' + (i || ' seconds')::interval, i % 2 = 0
FROM generate_series(1, $BENCH_ROWS) i;
CREATE TABLE "tabItem" AS SELECT i AS id, 'item ' || i AS name FROM generate_series(1, 20000) i;
ANALYZE;
SQL

age-keygen -o key.txt 2>/dev/null
RECIPIENT=$(age-keygen -y key.txt)
config() {
    cat >"$1" <<EOF
state_dir = "state"
[encryption]
recipients = ["$RECIPIENT"]
identity_file = "key.txt"
[store]
type = "local"
path = "store"
[[source]]
name = "db"
type = "postgres"
url = "postgres://postgres@127.0.0.1:5432/$SRC"
$2
EOF
}
config exact.toml "exact_count_limit = 1000000000000"
config estimate.toml "exact_count_limit = 0"
config drill.toml "exact_count_limit = 0
[drill]
staging_dir = \"drill\"
[[drill.database]]
source = \"db\"
url = \"postgres://postgres@127.0.0.1:5432/$DRILL\"
probes = [\"SELECT count(*) FROM \\\"tabSales Invoice\\\" WHERE flag\"]"

# once NAME CMD: runs CMD once (after a CHECKPOINT, so one run's writes do not slow the next),
# appending "seconds max_rss_kib" to logs/NAME.times.
once() {
    local name=$1 cmd=$2 n
    n=1
    if [[ -f logs/$name.times ]]; then n=$(($(wc -l <"logs/$name.times") + 1)); fi
    $PG -d postgres -c CHECKPOINT >/dev/null
    /usr/bin/time -f '%e %M' -o "logs/$name.$n.time" bash -c "$cmd" >"logs/$name.$n.log" 2>&1 ||
        die "$name failed: see $BENCH_DIR/logs/$name.$n.log"
    cat "logs/$name.$n.time" >>"logs/$name.times"
}

# summary NAME: "median_seconds max_rss_kib" over the runs of NAME.
summary() {
    printf '%s %s\n' \
        "$(cut -d' ' -f1 "logs/$1.times" | sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}')" \
        "$(cut -d' ' -f2 "logs/$1.times" | sort -n | tail -1)"
}

# Runs alternate between coffer and the baseline, so that neither gets the quieter machine.
log "backups"
for ((i = 1; i <= BENCH_RUNS; i++)); do
    rm -rf store state
    once backup-exact "$COFFER_BIN --config exact.toml backup"
    rm -rf store state
    once backup-estimate "$COFFER_BIN --config estimate.toml backup"
    once backup-baseline "pg_dump -h 127.0.0.1 -U postgres --no-owner $SRC | gzip -6 | age -r $RECIPIENT > base.sql.gz.age"
done
read -r b_exact rss_b < <(summary backup-exact)
read -r b_est _ < <(summary backup-estimate)
read -r b_base _ < <(summary backup-baseline)
stored=$(du -sb store | cut -f1)
base_size=$(stat -c %s base.sql.gz.age)
plain=$("$COFFER_BIN" --config estimate.toml list --json | python3 -c "import json,sys; print(json.load(sys.stdin)[0][\"plaintext_bytes\"])")

log "restores"
for ((i = 1; i <= BENCH_RUNS; i++)); do
    drop $STG
    once restore-coffer "$COFFER_BIN --config estimate.toml restore latest --source db --db-url postgres://postgres@127.0.0.1:5432/$STG --create"
    drop $BASE
    once restore-baseline "$PG -d postgres -c 'CREATE DATABASE $BASE' >/dev/null && age -d -i key.txt base.sql.gz.age | gunzip | psql -h 127.0.0.1 -U postgres -q -v ON_ERROR_STOP=1 --single-transaction --file=- -d $BASE >/dev/null"
done
read -r r_coffer rss_r < <(summary restore-coffer)
read -r r_base _ < <(summary restore-baseline)

# A drill of the same snapshot: download and check the parts, load into its staging database
# (dropped and re-created each run), count every table, run one probe.
if "$COFFER_BIN" drill --help >/dev/null 2>&1; then
    log "drills"
    for ((i = 1; i <= BENCH_RUNS; i++)); do
        once drill-coffer "$COFFER_BIN --config drill.toml drill"
    done
    read -r d_coffer rss_d < <(summary drill-coffer)
fi

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
{
    echo "## Database path: PostgreSQL, $BENCH_ROWS + 20000 rows (median of $BENCH_RUNS)"
    echo
    echo "$("$COFFER_BIN" --version), $(pg_dump --version), $(nproc) cores"
    echo
    echo "| what | seconds | vs baseline | peak RSS |"
    echo "| --- | --- | --- | --- |"
    echo "| backup: pg_dump \\| gzip -6 \\| age | $b_base | 1.00x | |"
    echo "| backup: coffer (exact count(*) of every table) | $b_exact | $(ratio "$b_base" "$b_exact")x faster | $((rss_b / 1024)) MiB |"
    echo "| backup: coffer (server estimates only) | $b_est | $(ratio "$b_base" "$b_est")x faster | |"
    echo "| restore: createdb; age -d \\| gunzip \\| psql --single-transaction -f - | $r_base | 1.00x | |"
    echo "| restore: coffer --db-url (+ counting every table) | $r_coffer | $(ratio "$r_base" "$r_coffer")x faster | $((rss_r / 1024)) MiB |"
    if [[ -n ${d_coffer:-} ]]; then
        echo "| drill: coffer drill (download, load, count every table, 1 probe) | $d_coffer | $(ratio "$r_base" "$d_coffer")x faster | $((rss_d / 1024)) MiB |"
    fi
    echo
    echo "Stored: coffer $(ratio "$stored" 1048576) MiB, baseline $(ratio "$base_size" 1048576) MiB (SQL: $(ratio "${plain:-0}" 1048576) MiB)."
} | tee "$BENCH_DIR/results.md"
