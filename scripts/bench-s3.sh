#!/usr/bin/env bash
# Benchmark backups to an S3 store: coffer, restic (which speaks S3) and the pipeline
# `tar | gzip -6 | age | rclone rcat` back up the same site into one local single-node Garage,
# then restore it; wall time and peak RSS (GNU time -v) of each, the median of BENCH_REPS runs,
# all in the same run on the same machine.
#
# Usage: scripts/bench-s3.sh            (needs garage on PATH or in ~/.cargo/bin, restic,
#                                        rclone, age, tar, gzip, python3, /usr/bin/time)
#
#   1. starts a Garage 2.5 node on loopback (its own folder, replication_factor 1, sqlite),
#      lays it out, makes a key and a bucket;
#   2. generates (once; reused while its size matches) an ERPNext-like files folder of
#      BENCH_SIZE_MB MiB in $BENCH_DIR/site: nested folders of files 4 KiB..2 MiB, half
#      incompressible "attachments", half CSV-like text (seeded: the same tree every time);
#   3. BENCH_REPS times, in a rotating order, a first backup into an empty place of the bucket:
#        coffer  --config CFG backup: the s3 store, defaults (part_size 64MiB, chunk_size 16MiB,
#                parallel_uploads 2), one directory source, default compression
#        restic  -r s3:ENDPOINT/bucket/restic-N backup SITE (repository v2, default compression)
#        rclone  tar -C SITE -cf - . | gzip -6 | age -r KEY | rclone rcat garage:bucket/rclone-N
#      then each one's restore of what it stored (coffer restore, restic restore, rclone cat |
#      age -d | gzip -d | tar -x), compared with the site (diff -r) once per tool.
#
# Environment: BENCH_SIZE_MB (default 1024), BENCH_REPS (default 3), BENCH_DIR (default
# /tmp/coffer-bench-s3; needs about 4x BENCH_SIZE_MB free), COFFER_BIN (default: cargo build
# --release --locked, target/release/coffer).
# Results: Markdown on stdout and in $BENCH_DIR/results.md; logs in $BENCH_DIR/logs/.
set -euo pipefail
export LC_ALL=C

if [[ ${1:-} == -h || ${1:-} == --help ]]; then
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
    exit 0
fi
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SIZE_MB=${BENCH_SIZE_MB:-1024}
REPS=${BENCH_REPS:-3}
DIR=${BENCH_DIR:-/tmp/coffer-bench-s3}
die() { printf 'bench-s3.sh: %s\n' "$*" >&2; exit 1; }
log() { printf '==> %s\n' "$*" >&2; }

GARAGE=$(command -v garage || true)
[[ -n $GARAGE ]] || GARAGE=${CARGO_HOME:-$HOME/.cargo}/bin/garage
[[ -x $GARAGE ]] || die "garage is missing: cargo install --locked garage@2.5.0"
for t in restic rclone age tar gzip python3 jq; do
    command -v "$t" >/dev/null || die "$t is missing (apt-get install $t)"
done
[[ -x /usr/bin/time ]] || die "GNU time is missing (apt-get install time)"
if [[ -z ${COFFER_BIN:-} ]]; then
    cargo build --release --locked >&2
    COFFER_BIN=$PWD/target/release/coffer
fi

mkdir -p "$DIR/logs"
rm -rf "$DIR/garage" "$DIR/restore" "$DIR/state"
mkdir -p "$DIR/garage"

# 1. Garage.
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
S3_PORT=$(port); RPC_PORT=$(port); ADMIN_PORT=$(port)
GCFG=$DIR/garage/garage.toml
cat >"$GCFG" <<EOF
metadata_dir = "$DIR/garage/meta"
data_dir = "$DIR/garage/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$RPC_PORT"
rpc_public_addr = "127.0.0.1:$RPC_PORT"
rpc_secret = "$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')"
[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$S3_PORT"
root_domain = ".s3.garage.localhost"
[admin]
api_bind_addr = "127.0.0.1:$ADMIN_PORT"
EOF
"$GARAGE" -c "$GCFG" server >"$DIR/logs/garage.log" 2>&1 &
GARAGE_PID=$!
trap 'kill $GARAGE_PID 2>/dev/null || true' EXIT
g() {
    for _ in $(seq 100); do
        "$GARAGE" -c "$GCFG" "$@" 2>>"$DIR/logs/garage-cli.log" && return 0
        sleep 0.2
    done
    die "garage $* failed (see $DIR/logs/garage-cli.log)"
}
id=$(g status | awk 'length($1) >= 16 && $1 ~ /^[0-9a-f]+$/ {print $1; exit}')
[[ -n $id ]] || die "no Garage node id"
g layout assign -z dc1 -c 10G "$id" >/dev/null
g layout apply --version 1 >/dev/null
key=$(g key create bench)
KEY_ID=$(awk -F': *' 'tolower($1) ~ /key id/ {print $2; exit}' <<<"$key")
SECRET=$(awk -F': *' 'tolower($1) ~ /secret key/ {print $2; exit}' <<<"$key")
g bucket create bench >/dev/null
g bucket allow --read --write --owner bench --key bench >/dev/null
ENDPOINT=http://127.0.0.1:$S3_PORT
log "Garage on $ENDPOINT"

# 2. The site.
SITE=$DIR/site
if [[ $(cat "$DIR/site.size" 2>/dev/null) != "$SIZE_MB" ]]; then
    log "generating a $SIZE_MB MiB site"
    rm -rf "$SITE"
    python3 - "$SITE" "$SIZE_MB" <<'PY'
import os, random, sys
root, size = sys.argv[1], int(sys.argv[2]) << 20
rng = random.Random(42)
words = [b"invoice", b"customer", b"item", b"amount", b"2026-11-23", b"EUR", b"paid", b"draft"]
written, n = 0, 0
while written < size:
    d = os.path.join(root, f"d{n // 200:04d}", f"s{n // 20 % 10}")
    os.makedirs(d, exist_ok=True)
    length = min(int(rng.lognormvariate(9.5, 1.6)) + 4096, 2 << 20, size - written)
    if n % 2:
        data = rng.randbytes(length)
    else:
        line = b",".join(rng.choice(words) for _ in range(8)) + b"\n"
        data = (line * (length // len(line) + 1))[:length]
    with open(os.path.join(d, f"f{n}.bin" if n % 2 else f"f{n}.csv"), "wb") as f:
        f.write(data)
    written += length
    n += 1
PY
    echo "$SIZE_MB" >"$DIR/site.size"
fi

# coffer's config, restic's and rclone's settings.
age-keygen -o "$DIR/key.txt" 2>/dev/null || true
RECIPIENT=$(grep -o 'age1[0-9a-z]*' "$DIR/key.txt" | head -1)
printf '%s' "$KEY_ID" >"$DIR/s3-key-id"; printf '%s' "$SECRET" >"$DIR/s3-secret"
chmod 600 "$DIR/s3-key-id" "$DIR/s3-secret"
export AWS_ACCESS_KEY_ID=$KEY_ID AWS_SECRET_ACCESS_KEY=$SECRET RESTIC_PASSWORD=bench
export RCLONE_CONFIG_GARAGE_TYPE=s3 RCLONE_CONFIG_GARAGE_PROVIDER=Other \
    RCLONE_CONFIG_GARAGE_ENDPOINT=$ENDPOINT RCLONE_CONFIG_GARAGE_ACCESS_KEY_ID=$KEY_ID \
    RCLONE_CONFIG_GARAGE_SECRET_ACCESS_KEY=$SECRET RCLONE_CONFIG_GARAGE_REGION=garage
coffer_config() {
    cat >"$DIR/coffer.toml" <<EOF
state_dir = "$DIR/state/$1"
[encryption]
recipients = ["$RECIPIENT"]
identity_file = "$DIR/key.txt"
[store]
type = "s3"
endpoint = "$ENDPOINT"
region = "garage"
bucket = "bench"
prefix = "coffer-$1"
access_key_id_file = "$DIR/s3-key-id"
secret_access_key_file = "$DIR/s3-secret"
[[source]]
name = "files"
type = "directory"
path = "$SITE"
EOF
}

# Runs a command under GNU time; records "seconds rss_kib" in $DIR/logs/$1.time.
timed() {
    local name=$1; shift
    /usr/bin/time -v -o "$DIR/logs/$name.gtime" "$@" >"$DIR/logs/$name.out" 2>"$DIR/logs/$name.err" ||
        die "$name failed: $(tail -n 5 "$DIR/logs/$name.err")"
    local wall rss
    wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$DIR/logs/$name.gtime" |
        awk -F: '{ if (NF == 3) print $1*3600 + $2*60 + $3; else print $1*60 + $2 }')
    rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$DIR/logs/$name.gtime")
    echo "$wall $rss" >"$DIR/logs/$name.time"
}

tools=(coffer restic rclone)
for rep in $(seq "$REPS"); do
    for k in 0 1 2; do
        t=${tools[$(( (k + rep) % 3 ))]}
        log "run $rep: $t backup, then restore"
        rm -rf "$DIR/restore"; mkdir -p "$DIR/restore"
        case $t in
        coffer)
            coffer_config "$rep"
            timed "coffer-backup-$rep" "$COFFER_BIN" --config "$DIR/coffer.toml" backup
            timed "coffer-restore-$rep" "$COFFER_BIN" --config "$DIR/coffer.toml" restore latest \
                --to "$DIR/restore/coffer"
            [[ $rep == 1 ]] && { diff -r "$SITE" "$DIR/restore/coffer" >/dev/null || die "coffer's restore differs"; }
            ;;
        restic)
            repo=s3:$ENDPOINT/bench/restic-$rep
            restic -r "$repo" init >/dev/null 2>&1
            timed "restic-backup-$rep" restic -r "$repo" backup "$SITE"
            timed "restic-restore-$rep" restic -r "$repo" restore latest --target "$DIR/restore/restic"
            [[ $rep == 1 ]] && { diff -r "$SITE" "$DIR/restore/restic$SITE" >/dev/null || die "restic's restore differs"; }
            ;;
        rclone)
            # (rclone's S3 client refuses to start when AWS_CA_BUNDLE is set, as on some
            # machines: the endpoint is plain http on loopback, no CA is needed.)
            timed "rclone-backup-$rep" env -u AWS_CA_BUNDLE bash -c "set -o pipefail; tar -C '$SITE' -cf - . | gzip -6 | age -r '$RECIPIENT' | rclone rcat garage:bench/rclone-$rep.tar.gz.age"
            mkdir -p "$DIR/restore/rclone"
            timed "rclone-restore-$rep" env -u AWS_CA_BUNDLE bash -c "set -o pipefail; rclone cat garage:bench/rclone-$rep.tar.gz.age | age -d -i '$DIR/key.txt' | gzip -d | tar -C '$DIR/restore/rclone' -xf -"
            [[ $rep == 1 ]] && { diff -r "$SITE" "$DIR/restore/rclone" >/dev/null || die "rclone's restore differs"; }
            ;;
        esac
    done
done
rm -rf "$DIR/restore"

# Medians.
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
stat() { for rep in $(seq "$REPS"); do awk -v f="$3" '{print $f}' "$DIR/logs/$1-$2-$rep.time"; done | median; }
{
    echo "## S3 store: $SIZE_MB MiB site to a local single-node Garage 2.5.0 (median of $REPS)"
    echo
    echo "| tool | backup s | backup peak RSS MiB | restore s | restore peak RSS MiB |"
    echo "| --- | ---: | ---: | ---: | ---: |"
    for t in coffer restic rclone; do
        printf '| %s | %.2f | %.0f | %.2f | %.0f |\n' "$t" "$(stat "$t" backup 1)" \
            "$(echo "$(stat "$t" backup 2) / 1024" | bc -l)" "$(stat "$t" restore 1)" \
            "$(echo "$(stat "$t" restore 2) / 1024" | bc -l)"
    done
    echo
    echo "rclone: \`tar | gzip -6 | age | rclone rcat\`; its peak RSS is the largest single process of the pipeline (GNU time), not their sum."
} | tee "$DIR/results.md"
