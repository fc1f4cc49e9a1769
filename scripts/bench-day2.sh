#!/usr/bin/env bash
# Benchmark "day-2" backups: coffer (a full on day 1, then differentials against it), restic and
# borg back up the same site day after day while about 1 % of it changes every day. A second
# mode (BENCH_MANY_FILES) measures coffer alone on a tree of many tiny files.
#
# Usage: scripts/bench-day2.sh                           (as root on a fresh Debian box:
#                                                         installs age, restic, borgbackup, jq, time)
#        BENCH_MANY_FILES=1000000 scripts/bench-day2.sh  (many-files mode, below)
#
# Day-2 mode (the default):
#   1. generates (once; reused while its parameters match) an ERPNext-like files folder of
#      BENCH_SIZE_MB MiB in $BENCH_DIR/site0: about 10k files per GiB in nested folders, half
#      the bytes incompressible "attachments", half CSV exports and logs, every file 4 KiB..2 MiB
#      (mean about 100 KiB, median about 6 KiB); a seeded python3 generator: the same tree
#      every time;
#   2. copies it to $BENCH_DIR/site and, before every day after the first, changes that copy
#      (seeded, the same changes every run): 0.5 % of the files modified (attachments replaced
#      by a new version, logs appended to, CSV exports rewritten or appended to), 0.4 % added
#      (the same mix), 0.1 % deleted; new bytes written about 1 % of the site. Every day the
#      same tree is then backed up by each tool in turn (the order rotates every day):
#        coffer  --config CFG backup --json: a local store, one directory source, default
#                compression, full_every left at its default 7d (day 1 is a full, the later
#                days differentials against it)
#        restic  backup SITE: repository version 2, default compression
#        borg    create --compression zlib,6 REPO::dayN SITE: repokey encryption
#   3. after the last day, backs the unchanged tree up once more with every tool, and (unless
#      BENCH_VERIFY=0) restores coffer's last snapshot (the full, then the differential) and
#      compares it with the tree.
#   Wall time and peak RSS come from GNU time -v; the store size is du -sb of the store or
#   repository after each backup (coffer's state_dir and restic's and borg's local caches are
#   not counted; the report lists them apart).
#
# Many-files mode (BENCH_MANY_FILES=N): generates (once; reused while N matches) N files of
# 0..200 bytes in BENCH_MANY_DIRS folders in $BENCH_DIR/many-N (python3 writing with os.open,
# about a minute per million files), then measures coffer alone: a full backup into an empty
# store, then a backup of the unchanged tree (a differential). The goal at 1M files is a peak
# RSS under 100 MiB. restic and borg are not run in this mode.
#
# Environment:
#   BENCH_SIZE_MB     size of the generated site in MiB (default 1024)
#   BENCH_DAYS        days backed up (default 7; day 1 is coffer's full)
#   BENCH_DIR         work folder (default /tmp/coffer-day2); needs about 5x BENCH_SIZE_MB free
#                     (many-files mode: about 5 KiB and one inode per file)
#   BENCH_VERIFY      0: do not restore and compare coffer's last snapshot (default 1)
#   BENCH_KEEP        1: keep the stores, the repositories and the changed site after the run
#                     (default: removed; the generated site, the key and the logs are kept)
#   BENCH_MANY_FILES  N: run the many-files mode with N files instead of the day-2 mode
#   BENCH_MANY_DIRS   folders of the many-files tree (default 1000)
#   COFFER_BIN        coffer binary to test; if unset, `cargo build --release --locked` is run
#                     and target/release/coffer is used
#
# Results: Markdown on stdout and in $BENCH_DIR/results.md (many-files mode:
# $BENCH_DIR/results-many-files.md); progress on stderr; every command's stdout, stderr and
# GNU time report in $BENCH_DIR/logs/ (many-files mode: $BENCH_DIR/logs-many-files/).
# The page cache is warm (nothing is dropped: the tree was just written or copied).
set -euo pipefail
export LC_ALL=C

if [[ ${1:-} == -h || ${1:-} == --help ]]; then
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
    exit 0
fi

BENCH_SIZE_MB=${BENCH_SIZE_MB:-1024}
BENCH_DAYS=${BENCH_DAYS:-7}
BENCH_DIR=${BENCH_DIR:-/tmp/coffer-day2}
BENCH_VERIFY=${BENCH_VERIFY:-1}
BENCH_KEEP=${BENCH_KEEP:-0}
BENCH_MANY_FILES=${BENCH_MANY_FILES:-}
BENCH_MANY_DIRS=${BENCH_MANY_DIRS:-1000}
COFFER_BIN=${COFFER_BIN:-}
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
GENERATOR_VERSION=1

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'bench-day2.sh: error: %s\n' "$*" >&2; exit 1; }

[[ $BENCH_SIZE_MB =~ ^[1-9][0-9]*$ ]] || die "BENCH_SIZE_MB must be a positive integer (got '$BENCH_SIZE_MB')"
[[ $BENCH_DAYS =~ ^[1-9][0-9]*$ ]] || die "BENCH_DAYS must be a positive integer (got '$BENCH_DAYS')"
[[ $BENCH_MANY_DIRS =~ ^[1-9][0-9]*$ ]] || die "BENCH_MANY_DIRS must be a positive integer (got '$BENCH_MANY_DIRS')"
MANY=0
if [[ -n $BENCH_MANY_FILES ]]; then
    [[ $BENCH_MANY_FILES =~ ^[1-9][0-9]*$ ]] ||
        die "BENCH_MANY_FILES must be a positive integer (got '$BENCH_MANY_FILES')"
    MANY=1
fi

# ---------------------------------------------------------------- 1. tools
ensure_tools() {
    local missing=() t
    { command -v age && command -v age-keygen; } >/dev/null || missing+=(age)
    command -v python3 >/dev/null || missing+=(python3)
    command -v jq >/dev/null || missing+=(jq)
    [[ -x /usr/bin/time ]] || missing+=(time)
    if ((!MANY)); then
        command -v restic >/dev/null || missing+=(restic)
        command -v borg >/dev/null || missing+=(borgbackup)
    fi
    if ((${#missing[@]} > 0)); then
        if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
            log "installing with apt-get: ${missing[*]}"
            apt-get update -qq >&2
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
        else
            die "missing tools: ${missing[*]}. Run this script as root (it installs them with apt-get), or install them first: sudo apt-get install -y ${missing[*]}"
        fi
    fi
    for t in age age-keygen python3 jq cp du diff find awk sort; do
        command -v "$t" >/dev/null || die "$t is still missing"
    done
    if ((!MANY)); then
        for t in restic borg; do
            command -v "$t" >/dev/null || die "$t is still missing"
        done
    fi
    [[ -x /usr/bin/time ]] || die "/usr/bin/time is still missing (Debian package 'time')"
    [[ $(/usr/bin/time -v true 2>&1) == *'Maximum resident set size'* ]] ||
        die "/usr/bin/time is not GNU time (no -v); install the Debian package 'time'"
}
ensure_tools

# ---------------------------------------------------------------- 2. coffer
if [[ -z $COFFER_BIN ]]; then
    command -v cargo >/dev/null ||
        die "cargo not found: install Rust (https://rustup.rs) or set COFFER_BIN to a coffer binary"
    log "building coffer (cargo build --release --locked)"
    (cd "$REPO_ROOT" && cargo build --release --locked >&2)
    COFFER_BIN=$REPO_ROOT/target/release/coffer
fi
if [[ $COFFER_BIN != */* ]]; then
    COFFER_BIN=$(command -v "$COFFER_BIN") || die "COFFER_BIN '$COFFER_BIN' not found in PATH"
fi
[[ -x $COFFER_BIN ]] ||
    die "coffer binary $COFFER_BIN is not executable: build one (cargo build --release --locked) and set COFFER_BIN=target/release/coffer"
COFFER_BIN=$(cd "$(dirname "$COFFER_BIN")" && pwd)/$(basename "$COFFER_BIN")
COFFER_VERSION=$("$COFFER_BIN" --version) || die "$COFFER_BIN --version failed"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- work dir, helpers
mkdir -p "$BENCH_DIR"
BENCH_DIR=$(cd "$BENCH_DIR" && pwd -P)
[[ $BENCH_DIR != / ]] || die "BENCH_DIR must not be /"
case $BENCH_DIR in *'"'* | *\\*) die "BENCH_DIR must not contain quotes or backslashes" ;; esac
KEY=$BENCH_DIR/key.txt
if [[ ! -f $KEY ]]; then
    age-keygen -o "$KEY" 2>/dev/null
fi
RECIPIENT=$(age-keygen -y "$KEY")

# write_config CFG STORE STATE SOURCE_DIR: a coffer config with a local store and one folder source.
write_config() {
    cat >"$1" <<TOML
state_dir = "$3"

[encryption]
recipients = ["$RECIPIENT"]
identity_file = "$KEY"

[store]
type = "local"
path = "$2"
part_size = "64MiB"

[[source]]
name = "files"
type = "directory"
path = "$4"
TOML
}

# measure KEY CMD...: runs CMD under GNU time -v, its stdout in $LOGDIR/KEY.out and its stderr in
# KEY.err; sets WALL (seconds) and RSS_KB (peak resident set size in KiB).
measure() {
    local key=$1 tf
    shift
    tf=$LOGDIR/$key.time
    if ! /usr/bin/time -v -o "$tf" "$@" >"$LOGDIR/$key.out" 2>"$LOGDIR/$key.err"; then
        printf 'bench-day2.sh: error: %s failed: %s\n--- last lines of %s:\n' "$key" "$*" "$LOGDIR/$key.err" >&2
        tail -n 25 "$LOGDIR/$key.err" >&2
        exit 1
    fi
    WALL=$(awk -F': ' '/Elapsed \(wall clock\) time/ {n = split($NF, a, ":"); s = 0
        for (i = 1; i <= n; i++) s = s * 60 + a[i]; print s}' "$tf")
    RSS_KB=$(awk -F': ' '/Maximum resident set size/ {print $NF}' "$tf")
    [[ -n $WALL && -n $RSS_KB ]] || die "could not parse $tf"
}

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.1f", b - a}'; }
dir_bytes() { du -sb "$1" | cut -f1; }
mib() { awk -v b="$1" 'BEGIN {printf "%.1f", b / 1048576}'; }
# human BYTES: "12.3 KiB" below 1 MiB, else "12.3 MiB" (signed with +/- when SIGN is given)
human() {
    awk -v b="$1" -v sign="${2:-}" 'BEGIN {f = sign ? "%+.1f" : "%.1f"; a = b < 0 ? -b : b
        if (a < 1048576) printf f " KiB", b / 1024; else printf f " MiB", b / 1048576}'
}
kib_mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
# ratio A B: A / B to two decimals and an x, "n/a" when A or B is empty or B is 0
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (a != "" && b > 0) printf "%.2fx", a / b; else print "n/a"}'; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2f %%", 100 * a / b; else print "n/a"}'; }
median() {
    # shellcheck disable=SC2086 # split the space-separated list on purpose
    printf '%s\n' $1 | sort -g | awk 'NF {a[++n] = $1} END {
        if (n == 0) print ""; else if (n % 2) print a[(n + 1) / 2]; else print (a[n / 2] + a[n / 2 + 1]) / 2 }'
}
fmt_s() { if [[ -n $1 ]]; then printf '%.2f' "$1"; else printf 'n/a'; fi; }

host_lines() {
    local cpu_model mem_total fs_type
    cpu_model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
    [[ -n $cpu_model ]] || cpu_model=$(lscpu 2>/dev/null | awk -F': *' '/^Model name/ {print $2; exit}')
    mem_total=$(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)
    fs_type=$(df -PT "$BENCH_DIR" | awk 'NR == 2 {print $2}')
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'), host kernel $(uname -r) ($(uname -m)), niceness $(nice)"
    echo "- CPU: ${cpu_model:-unknown}; nproc: $(nproc); memory: $mem_total; $BENCH_DIR on ${fs_type:-?}"
    echo "- load average (1, 5, 15 min) before the run: $LOAD_START (other work on the host skews the times)"
    echo "- coffer: $COFFER_VERSION ($COFFER_BIN)"
}

# ================================================================ many-files mode
if ((MANY)); then
    N=$BENCH_MANY_FILES
    DIRS=$((BENCH_MANY_DIRS < N ? BENCH_MANY_DIRS : N))
    MSITE=$BENCH_DIR/many-$N
    MSTAMP=$MSITE.stamp
    MSTORE=$BENCH_DIR/many-store
    MSTATE=$BENCH_DIR/many-state
    MCFG=$BENCH_DIR/coffer-many.toml
    LOGDIR=$BENCH_DIR/logs-many-files
    RESULTS=$BENCH_DIR/results-many-files.md
    # shellcheck disable=SC2317 # run by the EXIT trap
    cleanup_many() {
        rm -rf "$MSITE.tmp"
        if [[ $BENCH_KEEP != 1 ]]; then rm -rf "$MSTORE" "$MSTATE"; fi
    }
    trap cleanup_many EXIT
    rm -rf "$MSTORE" "$MSTATE" "$MSITE.tmp" "$LOGDIR"
    mkdir -p "$LOGDIR"

    want_stamp="files=$N dirs=$DIRS generator=many-v$GENERATOR_VERSION"
    GEN_NOTE="reused from an earlier run"
    if [[ -d $MSITE && -f $MSTAMP && $(cat "$MSTAMP") == "$want_stamp" ]]; then
        log "reusing $MSITE ($want_stamp)"
    else
        log "generating $N files of 0..200 bytes in $DIRS folders in $MSITE"
        rm -rf "$MSITE" "$MSTAMP"
        t0=$(now)
        python3 - "$MSITE.tmp" "$N" "$DIRS" >&2 <<'PY'
import os
import random
import sys

root, n, ndirs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
r = random.Random("coffer-many-files-v1")
pool = r.randbytes(1 << 16).hex().encode()  # 128 KiB of text to cut the files from
sizes = r.choices(range(201), k=n)
offs = r.choices(range(len(pool) - 200), k=n)
flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
os.mkdir(root)
k = 0
for d in range(ndirs):
    name = "d%04d" % d
    os.mkdir(os.path.join(root, name))
    dfd = os.open(os.path.join(root, name), os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(n // ndirs + (1 if d < n % ndirs else 0)):
            fd = os.open("f%07d.txt" % k, flags, 0o644, dir_fd=dfd)
            s = sizes[k]
            if s:
                os.write(fd, pool[offs[k]:offs[k] + s])
            os.close(fd)
            k += 1
    finally:
        os.close(dfd)
print("generated %d files (%d bytes) in %d folders" % (k, sum(sizes), ndirs))
PY
        mv "$MSITE.tmp" "$MSITE"
        printf '%s\n' "$want_stamp" >"$MSTAMP"
        GEN_NOTE="generated in $(since "$t0") s"
        log "  $GEN_NOTE"
    fi
    MFILES=$(find "$MSITE" -type f | wc -l)
    MBYTES=$(find "$MSITE" -type f -printf '%s\n' | awk '{s += $1} END {printf "%d\n", s}')
    write_config "$MCFG" "$MSTORE" "$MSTATE" "$MSITE"

    declare -A MW=() MR=() MS=() MK=() MP=() MT=() MC=()
    for run in full same; do
        log "coffer backup ($run)"
        measure "many.$run" "$COFFER_BIN" --config "$MCFG" backup --json
        MW[$run]=$WALL
        MR[$run]=$RSS_KB
        MK[$run]=$(jq -r '.folders[0].kind // "?"' "$LOGDIR/many.$run.out")
        MS[$run]=$(jq -r '.stored_bytes' "$LOGDIR/many.$run.out")
        MP[$run]=$(jq -r '.plaintext_bytes' "$LOGDIR/many.$run.out")
        MT[$run]=$(jq -r '.manifest.sources[0].encrypted_bytes' "$LOGDIR/many.$run.out")
        MC[$run]=$(jq -r '.manifest.sources[0].checksums.encrypted_bytes // 0' "$LOGDIR/many.$run.out")
        log "  ${MK[$run]}: $WALL s, peak RSS $(kib_mib "$RSS_KB") MiB, stored $(mib "${MS[$run]}") MiB"
    done
    STATE_BYTES=$(dir_bytes "$MSTATE")
    STORE_BYTES=$(dir_bytes "$MSTORE")
    goal() { awk -v k="$1" 'BEGIN {if (k < 100 * 1024) print "yes"; else print "**no**"}'; }

    {
        echo "# coffer many-files benchmark"
        echo
        host_lines
        echo "- tree: $MFILES files of 0..200 bytes ($(mib "$MBYTES") MiB of file data) in $DIRS folders ($GEN_NOTE); warm page cache"
        echo
        echo "| backup | kind | wall s | files/s | peak RSS MiB | RSS < 100 MiB | tar plaintext MiB | stored MiB | of which tar stream MiB | of which checksum list MiB |"
        echo "|---|---|---:|---:|---:|---|---:|---:|---:|---:|"
        for run in full same; do
            label="first backup"
            [[ $run == same ]] && label="second backup, nothing changed"
            printf '| %s | %s | %.2f | %s | %s | %s | %s | %s | %s | %s |\n' "$label" "${MK[$run]}" "${MW[$run]}" \
                "$(awk -v n="$MFILES" -v s="${MW[$run]}" 'BEGIN {if (s > 0) printf "%.0f", n / s; else print "n/a"}')" \
                "$(kib_mib "${MR[$run]}")" "$(goal "${MR[$run]}")" "$(mib "${MP[$run]}")" "$(mib "${MS[$run]}")" \
                "$(mib "${MT[$run]}")" "$(mib "${MC[$run]}")"
        done
        echo
        echo "- the unchanged differential stores $(pct "${MS[same]}" "${MS[full]}") of the full's bytes (the checksum list names every file, changed or not)"
        echo "- store after both: $(mib "$STORE_BYTES") MiB; coffer state_dir (folder index, signing key): $(mib "$STATE_BYTES") MiB"
    } | tee "$RESULTS"
    log "results written to $RESULTS (logs in $LOGDIR)"
    exit 0
fi

# ================================================================ day-2 mode
SITE0=$BENCH_DIR/site0
STAMP=$BENCH_DIR/site0.stamp
SITE=$BENCH_DIR/site
GEN=$BENCH_DIR/day2gen.py
CFG=$BENCH_DIR/coffer.toml
STORE=$BENCH_DIR/coffer-store
STATE=$BENCH_DIR/coffer-state
RREPO=$BENCH_DIR/restic-repo
BREPO=$BENCH_DIR/borg-repo
RESTORED=$BENCH_DIR/restored
LOGDIR=$BENCH_DIR/logs
RESULTS=$BENCH_DIR/results.md
export RESTIC_PASSWORD=bench RESTIC_CACHE_DIR=$BENCH_DIR/restic-cache
export BORG_PASSPHRASE=bench BORG_BASE_DIR=$BENCH_DIR/borg-home
export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_RELOCATED_REPO_ACCESS_IS_OK=yes

cleanup_outputs() {
    rm -rf "$RESTORED" "$SITE0.tmp"
    if [[ $BENCH_KEEP != 1 ]]; then
        rm -rf "$STORE" "$STATE" "$RREPO" "$BREPO" "$RESTIC_CACHE_DIR" "$BORG_BASE_DIR" "$SITE"
    fi
}
trap cleanup_outputs EXIT
rm -rf "$STORE" "$STATE" "$RREPO" "$BREPO" "$RESTIC_CACHE_DIR" "$BORG_BASE_DIR" "$SITE" "$RESTORED" "$SITE0.tmp" "$LOGDIR"
mkdir -p "$LOGDIR"

# ---------------------------------------------------------------- 3. generator (site and daily changes)
cat >"$GEN" <<'PY'
"""Site generator and daily changes for scripts/bench-day2.sh: seeded, the same every time.

generate SITE MIB   writes an ERPNext-like files folder of MIB MiB into SITE
mutate SITE DAY     changes about 1 % of SITE for day DAY; prints what it did as JSON
"""
import json
import math
import os
import random
import sys
from array import array
from itertools import accumulate

MiB = 1 << 20
LO, HI = 4 << 10, 2 << 20  # every file 4 KiB .. 2 MiB,
SKEW = 4.0  # log-uniform bent towards small files: mean about 100 KiB, median about 6 KiB
EXT = ["pdf", "jpg", "png", "zip", "mp4", "docx", "xlsx", "heic"]


def draw_size(rng):
    return int(math.exp(math.log(LO) + (math.log(HI) - math.log(LO)) * rng.random() ** SKEW))


# ---- text tables (as in scripts/bench.sh): CSV exports and logs with realistic repetition
r = random.Random("coffer-bench-text-v1")
ri = lambda a, b: a + int(r.random() * (b - a))  # noqa: E731
ch = lambda seq: seq[int(r.random() * len(seq))]  # noqa: E731
FIRST = ("james mary john patricia robert jennifer michael linda william elizabeth david barbara richard susan "
         "joseph jessica thomas sarah charles karen chris nancy daniel lisa matthew betty anthony margaret mark "
         "sandra donald ashley steven kimberly paul emily andrew donna joshua michelle kenneth dorothy kevin carol "
         "brian amanda george melissa edward deborah ronald stephanie timothy rebecca jason sharon jeffrey laura "
         "ryan cynthia jacob kathleen gary amy nicholas shirley").split()
LAST = ("smith johnson williams brown jones garcia miller davis rodriguez martinez hernandez lopez gonzalez wilson "
        "anderson thomas taylor moore jackson martin lee perez thompson white harris sanchez clark ramirez lewis "
        "robinson walker young allen king wright scott torres nguyen hill flores green adams nelson baker hall "
        "rivera campbell mitchell carter roberts").split()
DOM = "gmail.com yahoo.com outlook.com proton.me example.org mail.de web.de icloud.com posteo.net".split()
COUNTRY = "US DE FR GB NL ES IT PL SE CA AU JP BR IN CH AT BE DK NO FI".split()
CUR = {"US": "USD", "GB": "GBP", "JP": "JPY", "CH": "CHF", "CA": "CAD", "AU": "AUD", "BR": "BRL",
       "IN": "INR", "SE": "SEK", "DK": "DKK", "NO": "NOK", "PL": "PLN"}
STATUS = "paid paid paid paid shipped shipped shipped refunded pending cancelled".split()
PAY = "card card card paypal sepa klarna applepay".split()
SKU = ["SKU-%05d" % ri(0, 100000) for _ in range(3000)]
PRICE = ["%d.%s" % (ri(1, 400), ch(["00", "49", "95", "99", "%02d" % ri(0, 100)])) for _ in range(3000)]
CUST = ["%s.%s%s@%s" % (ch(FIRST), ch(LAST), ch(["", str(ri(1, 100))]), ch(DOM)) for _ in range(6000)]
CSV_BODY = []
for _ in range(65536):
    c, s = ch(COUNTRY), ri(0, 3000)
    CSV_BODY.append(",%s,%s,%s,%s,%d,%s,%s,%s," % (ch(CUST), c, CUR.get(c, "EUR"), SKU[s], ri(1, 5), PRICE[s],
                                                  ch(STATUS), ch(PAY)))
CSV_TAIL = ["%s%06d\n" % (ch(["ch_", "pi_", "tx_"]), ri(0, 1000000)) for _ in range(65536)]
CSV_HEAD = "order_id,created_at,customer_email,country,currency,sku,qty,unit_price,status,payment,payment_ref\n"

LEVEL = ["INFO"] * 12 + ["DEBUG"] * 4 + ["WARN", "WARN", "ERROR"]
SVC = ["web-%d" % k for k in range(1, 7)] + ["api-%d" % k for k in range(1, 5)] + ["worker-1", "worker-2"]
IP = ["%d.%d.%d.%d" % (ch([10, 172, 192, 81, 93, 185]), ri(0, 256), ri(0, 256), ri(1, 255)) for _ in range(3000)]
PATHS = ["/", "/index.html", "/login", "/logout", "/cart", "/checkout", "/api/v1/orders/%d", "/api/v1/items/%d",
         "/api/v1/users/%d/profile", "/static/app.%x.js", "/static/style.%x.css", "/images/p/%d.jpg",
         "/search?q=%s", "/blog/%s", "/files/%x.pdf"]
WORDS = ("backup restore garden winter summer invoice report shoes bike lamp coffee tea chair desk phone cable "
         "charger book guitar camera lens tent jacket").split()
METH = ["GET"] * 8 + ["POST", "POST", "PUT", "DELETE", "HEAD"]
CODES = ["200"] * 14 + ["304", "304", "301", "302", "404", "404", "403", "500", "502"]
UA = ["Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/%d.0.0.0 Safari/537.36",
      "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.%d Safari/605.1.15",
      "Mozilla/5.0 (X11; Linux x86_64; rv:%d.0) Gecko/20100101 Firefox/%d.0",
      "Mozilla/5.0 (iPhone; CPU iPhone OS 17_%d like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
      "curl/8.%d.0", "Googlebot/2.1 (+http://www.google.com/bot.html)", "python-requests/2.%d.0"]


def path():
    p = ch(PATHS)
    if "%d" in p:
        return p % ri(1, 200000)
    if "%x" in p:
        return p % r.getrandbits(32)
    if "%s" in p:
        return p % ch(WORDS)
    return p


def ua():
    u = ch(UA)
    return u.replace("%d", str(ri(100, 125)) if "Chrome" in u or "Firefox" in u else str(ri(0, 9)))


LOG_BODY = ['Z %s [%s] %s "%s %s HTTP/1.1" %s ' % (ch(LEVEL), ch(SVC), ch(IP), ch(METH), path(), ch(CODES))
            for _ in range(65536)]
LOG_TAIL = ['%d %dms "%s"\n' % (ri(0, 400000), ri(1, 900), ua()) for _ in range(65536)]
TOD = ["%02d:%02d:%02d" % (s // 3600, s // 60 % 60, s % 60) for s in range(86400)]
MS = [".%03d" % k for k in range(1000)]
STEP3 = bytes(b & 3 for b in range(256))
STEP7 = bytes(1 + (b & 7) for b in range(256))


def text_rows(fr, kind, nbytes, day):
    """At least nbytes of rows, as a list of str pieces."""
    out = []
    oid = fr.randrange(10 ** 6, 10 ** 8)
    sec = fr.randrange(0, 3600)
    avg = 110 if kind == "csv" else 190
    left = nbytes
    while left > 0:
        n = max(16, min(20000, left // avg + 16))
        rb = fr.randbytes(6 * n)
        i1 = array("H", rb[0:2 * n])
        i2 = array("H", rb[2 * n:4 * n])
        secs = list(accumulate(rb[4 * n:5 * n].translate(STEP3), initial=sec))[1:]
        sec = secs[-1]
        parts = [None] * (6 * n)
        if kind == "csv":
            ids = list(accumulate(rb[5 * n:].translate(STEP7), initial=oid))[1:]
            oid = ids[-1]
            parts[0::6] = map(str, ids)
            parts[1::6] = [day] * n
            parts[2::6] = [TOD[s % 86400] for s in secs]
            parts[3::6] = [""] * n
            parts[4::6] = [CSV_BODY[k] for k in i1]
            parts[5::6] = [CSV_TAIL[k] for k in i2]
        else:
            parts[0::6] = [day] * n
            parts[1::6] = [TOD[s % 86400] for s in secs]
            parts[2::6] = [MS[(k * 7) % 1000] for k in i2]
            parts[3::6] = [""] * n
            parts[4::6] = [LOG_BODY[k] for k in i1]
            parts[5::6] = [LOG_TAIL[k] for k in i2]
        s = "".join(parts)
        out.append(s)
        left -= len(s)
    return out


def text_bytes(seed, kind, size, day, header):
    """size bytes of CSV or log text ending in a newline."""
    fr = random.Random(seed)
    data = ((CSV_HEAD if header else "") + "".join(text_rows(fr, kind, size, day))).encode()
    return data[:size - 1] + b"\n"


def write_random(p, size, seed):
    """size incompressible bytes into p (created or truncated)."""
    fr = random.Random(seed)
    with open(p, "wb") as f:
        n = size
        while n:
            k = min(n, 4 * MiB)
            f.write(fr.randbytes(k))
            n -= k


def attachment_place(rng, years):
    vis = "private" if rng.random() < 0.7 else "public"
    y = years[int(rng.random() * len(years))]
    m = 1 + int(rng.random() * 12)
    return "%s/files/%d/%02d/%016x.%s" % (vis, y, m, rng.getrandbits(64), EXT[int(rng.random() * len(EXT))])


def text_place(rng, years, tag):
    """(kind, relative path, row date prefix) of a new CSV export or log."""
    x = rng.random()
    y = years[int(rng.random() * len(years))]
    dayn = int(rng.random() * 336)
    m, dd = 1 + dayn // 28, 1 + dayn % 28
    date = "%04d-%02d-%02d" % (y, m, dd)
    if x < 0.5:
        return "csv", "private/exports/%d/%02d/orders-%s-%s.csv" % (y, m, date, tag), "," + date + " "
    if x < 0.85:
        return "log", "public/logs/%d/%02d/access-%s-%s.log" % (y, m, date, tag), date + "T"
    return "log", "private/logs/%d/app-%s-%s.log" % (y, date, tag), date + "T"


def create(site, rel, data_or_size, seed=None):
    p = os.path.join(site, rel)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    if seed is None:
        with open(p, "wb") as f:
            f.write(data_or_size)
    else:
        write_random(p, data_or_size, seed)


def generate(site, total_mib):
    total = total_mib * MiB
    att_total = total // 2
    txt_total = total - att_total
    rng = random.Random("coffer-day2-site-v1")
    years = list(range(2019, 2025))
    done = natt = 0
    while done < att_total:
        left = att_total - done
        size = draw_size(rng)
        if size >= left or left - size < LO:
            size = left
        create(site, attachment_place(rng, years), size, seed="day2-att-%d" % natt)
        done += size
        natt += 1
    done = ntxt = 0
    while done < txt_total:
        left = txt_total - done
        size = draw_size(rng)
        if size >= left or left - size < LO:
            size = left
        kind, rel, day = text_place(rng, years, "%05d" % ntxt)
        create(site, rel, text_bytes("day2-txt-%d" % ntxt, kind, size, day, kind == "csv"))
        done += size
        ntxt += 1
    print("generated %d attachments (%d MiB) and %d text files (%d MiB)"
          % (natt, att_total >> 20, ntxt, txt_total >> 20), file=sys.stderr)


def mutate(site, day):
    files = []
    for dp, dns, fns in os.walk(site):
        for fn in fns:
            p = os.path.join(dp, fn)
            files.append((os.path.relpath(p, site), os.lstat(p).st_size))
    files.sort()
    n = len(files)
    site_bytes = sum(s for _, s in files)
    rng = random.Random("coffer-day2-changes-v1-day%d" % day)
    n_mod = max(1, round(n * 0.005))
    n_new = max(1, round(n * 0.004))
    n_del = max(1, round(n * 0.001))
    picked = rng.sample(files, min(n, n_mod + n_del))
    dels, mods = picked[:n_del], picked[n_del:]
    budget = site_bytes // 100
    st = {"day": day, "files_before": n, "site_bytes_before": site_bytes, "modified": len(mods),
          "replaced_attachments": 0, "appended": 0, "rewritten_exports": 0, "added": n_new,
          "deleted": len(dels), "deleted_bytes": 0, "modified_file_bytes": 0}
    written = 0
    date = "2025-%02d-%02d" % (1 + day // 28 % 12, 1 + day % 28)
    for j, (rel, size) in enumerate(mods):
        p = os.path.join(site, rel)
        seed = "day2-d%d-m%d" % (day, j)
        if "/files/" in rel:  # an attachment: a new version replaces it whole
            write_random(p, size, seed)
            written += size
            st["replaced_attachments"] += 1
            st["modified_file_bytes"] += size
            continue
        kind = "csv" if rel.endswith(".csv") else "log"
        prefix = "," + date + " " if kind == "csv" else date + "T"
        if kind == "log" or rng.random() < 0.5:  # a log grows; so does half the time an export
            add = min(256 << 10, max(LO, int(size * rng.uniform(0.02, 0.2))))
            with open(p, "ab") as f:
                f.write(text_bytes(seed, kind, add, prefix, False))
            written += add
            st["appended"] += 1
            st["modified_file_bytes"] += size + add
        else:  # an export made again: new rows, about the same size
            new = max(LO, int(size * rng.uniform(0.9, 1.1)))
            with open(p, "wb") as f:
                f.write(text_bytes(seed, kind, new, prefix, True))
            written += new
            st["rewritten_exports"] += 1
            st["modified_file_bytes"] += new
    for rel, size in dels:
        os.remove(os.path.join(site, rel))
        st["deleted_bytes"] += size
    # New files, the site's mix; their sizes scaled so the day writes about 1 % of the site.
    kinds = ["att" if rng.random() < 0.5 else "txt" for _ in range(n_new)]
    sizes = [draw_size(rng) for _ in range(n_new)]
    left = budget - written
    f = min(5.0, max(0.2, left / sum(sizes))) if left > 0 else 0.2
    sizes = [min(HI, max(LO, int(s * f))) for s in sizes]
    added = 0
    for j, (k, size) in enumerate(zip(kinds, sizes)):
        seed = "day2-d%d-n%d" % (day, j)
        if k == "att":
            rel = attachment_place(rng, [2025])
            while os.path.lexists(os.path.join(site, rel)):
                rel = attachment_place(rng, [2025])
            create(site, rel, size, seed=seed)
        else:
            kind, rel, prefix = text_place(rng, [2025], "d%dn%d" % (day, j))
            create(site, rel, text_bytes(seed, kind, size, prefix, kind == "csv"))
        added += size
    written += added
    st["added_bytes"] = added
    st["written_bytes"] = written
    print(json.dumps(st))


if __name__ == "__main__":
    if sys.argv[1] == "generate":
        generate(sys.argv[2], int(sys.argv[3]))
    elif sys.argv[1] == "mutate":
        mutate(sys.argv[2], int(sys.argv[3]))
    else:
        sys.exit("usage: generate SITE MIB | mutate SITE DAY")
PY

# ---------------------------------------------------------------- 4. site
want_stamp="size_mib=$BENCH_SIZE_MB generator=day2-v$GENERATOR_VERSION"
GEN_NOTE="reused from an earlier run"
if [[ -d $SITE0 && -f $STAMP && $(cat "$STAMP") == "$want_stamp" ]]; then
    log "reusing site $SITE0 ($want_stamp)"
else
    log "generating a $BENCH_SIZE_MB MiB site in $SITE0"
    rm -rf "$SITE0" "$STAMP"
    t0=$(now)
    python3 "$GEN" generate "$SITE0.tmp" "$BENCH_SIZE_MB" >&2
    mv "$SITE0.tmp" "$SITE0"
    printf '%s\n' "$want_stamp" >"$STAMP"
    GEN_NOTE="generated in $(since "$t0") s"
    log "  $GEN_NOTE"
fi
site_stats() { # prints: files bytes attachment_bytes
    find "$1" -type f -printf '%s %P\n' | awk '{n++; s += $1; if ($2 ~ /\/files\//) a += $1}
        END {printf "%d %d %d\n", n, s, a}'
}
read -r SITE0_FILES SITE0_BYTES SITE0_ATT < <(site_stats "$SITE0")
SITE0_DIRS=$(find "$SITE0" -type d | wc -l)
log "copying the site to $SITE (the copy is what changes)"
cp -a "$SITE0" "$SITE"

# ---------------------------------------------------------------- 5. tools' stores
write_config "$CFG" "$STORE" "$STATE" "$SITE"
restic init --repo "$RREPO" >"$LOGDIR/restic-init.log" 2>&1 ||
    { cat "$LOGDIR/restic-init.log" >&2; die "restic init failed"; }
borg init -e repokey "$BREPO" >"$LOGDIR/borg-init.log" 2>&1 ||
    { cat "$LOGDIR/borg-init.log" >&2; die "borg init failed"; }

# ---------------------------------------------------------------- 6. days
TOOLS=(coffer restic borg)
declare -A T=() R=() S=() KIND=() SNAP=() CHG=()

# backup_with TOOL LABEL: one backup of $SITE by TOOL; LABEL is the day, or "same" (unchanged tree).
backup_with() {
    local tool=$1 label=$2 key=$1.day$2 extra=""
    case $tool in
    coffer)
        measure "$key" "$COFFER_BIN" --config "$CFG" backup --json
        KIND[$label]=$(jq -r '.folders[0].kind // "?"' "$LOGDIR/$key.out")
        SNAP[$label]=$(jq -r '.stored_bytes' "$LOGDIR/$key.out")
        S[$tool.$label]=$(dir_bytes "$STORE")
        extra=", ${KIND[$label]}, snapshot $(mib "${SNAP[$label]}") MiB"
        ;;
    restic)
        measure "$key" restic --repo "$RREPO" backup "$SITE"
        S[$tool.$label]=$(dir_bytes "$RREPO")
        ;;
    borg)
        measure "$key" borg create --compression zlib,6 "$BREPO::day$label" "$SITE"
        S[$tool.$label]=$(dir_bytes "$BREPO")
        ;;
    esac
    T[$tool.$label]=$WALL
    R[$tool.$label]=$RSS_KB
    log "  $tool: $WALL s, peak RSS $(kib_mib "$RSS_KB") MiB, store $(mib "${S[$tool.$label]}") MiB$extra"
}

# backup_all LABEL ROTATION: every tool in turn, the order rotated by ROTATION.
backup_all() {
    local i
    for ((i = 0; i < ${#TOOLS[@]}; i++)); do
        backup_with "${TOOLS[(i + $2) % ${#TOOLS[@]}]}" "$1"
    done
}

t_run=$(now)
for ((DAY = 1; DAY <= BENCH_DAYS; DAY++)); do
    if ((DAY > 1)); then
        python3 "$GEN" mutate "$SITE" "$DAY" >"$LOGDIR/changes.day$DAY.json"
        CHG[$DAY]=$(jq -r '"\(.modified)/\(.added)/\(.deleted) \(.written_bytes) \(.modified_file_bytes + .added_bytes)"' \
            "$LOGDIR/changes.day$DAY.json")
        read -r c w f <<<"${CHG[$DAY]}"
        log "day $DAY/$BENCH_DAYS: changed (modified/added/deleted files) $c, $(mib "$w") MiB written"
    else
        log "day 1/$BENCH_DAYS"
    fi
    backup_all "$DAY" $(((DAY - 1) % ${#TOOLS[@]}))
done
log "once more, nothing changed"
backup_all same $((BENCH_DAYS % ${#TOOLS[@]}))
RUN_SECONDS=$(since "$t_run")
# coffer alone: a new full (--full), then the unchanged tree: what a differential costs when
# nothing changed since its full (the dumpdir records and the checksum list of every file).
log "coffer: a new full, then the unchanged tree against it"
measure coffer.refull "$COFFER_BIN" --config "$CFG" backup --full --json
REFULL=$(jq -r '.stored_bytes' "$LOGDIR/coffer.refull.out")
measure coffer.refull-same "$COFFER_BIN" --config "$CFG" backup --json
REFULL_SAME=$(jq -r '.stored_bytes' "$LOGDIR/coffer.refull-same.out")
REFULL_LINE="- coffer, right after a new full (--full, $(mib "$REFULL") MiB), backup of the unchanged tree: stored $(human "$REFULL_SAME") = **$(pct "$REFULL_SAME" "$REFULL")** of the full (tar stream $(human "$(jq -r '.manifest.sources[0].encrypted_bytes' "$LOGDIR/coffer.refull-same.out")"), checksum list $(human "$(jq -r '.manifest.sources[0].checksums.encrypted_bytes // 0' "$LOGDIR/coffer.refull-same.out")")); $(fmt_s "$WALL") s, peak RSS $(kib_mib "$RSS_KB") MiB"

RESTORE_LINE=""
if [[ $BENCH_VERIFY != 0 ]]; then
    log "restoring coffer's last snapshot and comparing it with the tree"
    rm -rf "$RESTORED"
    measure coffer.restore "$COFFER_BIN" --config "$CFG" restore latest --to "$RESTORED"
    if diff -r -q "$SITE" "$RESTORED" >"$LOGDIR/coffer.restore.diff" 2>&1; then
        verdict="identical to the tree"
    else
        verdict="**differs from the tree** ($(wc -l <"$LOGDIR/coffer.restore.diff") lines of diff -r -q in $LOGDIR/coffer.restore.diff)"
        log "coffer's restore differs from the tree:"
        head -n 20 "$LOGDIR/coffer.restore.diff" >&2
    fi
    RESTORE_LINE="- coffer restore of the last snapshot (its full, then the differential): $(fmt_s "$WALL") s, peak RSS $(kib_mib "$RSS_KB") MiB; $verdict"
    rm -rf "$RESTORED"
fi
STATE_BYTES=$(dir_bytes "$STATE")
RCACHE_BYTES=$(dir_bytes "$RESTIC_CACHE_DIR")
BCACHE_BYTES=$(dir_bytes "$BORG_BASE_DIR")
read -r SITE_FILES SITE_BYTES _ < <(site_stats "$SITE")

# ---------------------------------------------------------------- 7. report
N=$BENCH_DAYS
declare -A DAY1=() MED=() FINAL=() PEAK=()
for tool in "${TOOLS[@]}"; do
    later=""
    peak=0
    for ((d = 1; d <= N; d++)); do
        if ((d > 1)); then later+=" ${T[$tool.$d]}"; fi
        if ((${R[$tool.$d]} > peak)); then peak=${R[$tool.$d]}; fi
    done
    DAY1[$tool]=${T[$tool.1]}
    MED[$tool]=$(median "$later")
    FINAL[$tool]=${S[$tool.$N]}
    PEAK[$tool]=$peak
done
restic_v=$(restic version | awk '{print $2}')
borg_v=$(borg --version | awk '{print $2}')
tool_name() {
    case $1 in
    coffer) echo "coffer" ;;
    restic) echo "restic $restic_v" ;;
    borg) echo "borg $borg_v (zlib,6)" ;;
    esac
}

{
    echo "# coffer day-2 benchmark"
    echo
    host_lines
    echo "- restic: $(restic version | head -n 1); borg: $(borg --version); age: $(age --version)"
    echo "- site: $SITE0_FILES files in $SITE0_DIRS folders, $(mib "$SITE0_BYTES") MiB ($(mib "$SITE0_ATT") MiB incompressible attachments, $(mib $((SITE0_BYTES - SITE0_ATT))) MiB CSV/log text); $GEN_NOTE"
    echo "- $N days; before each day after the first about 1 % of the site changes (seeded); after day $N: $SITE_FILES files, $(mib "$SITE_BYTES") MiB"
    echo "- every tool backs up the same tree each day (the order rotates daily); warm page cache (nothing dropped); all days and tools took $RUN_SECONDS s"
    echo
    echo "## Summary"
    echo
    echo "| tool | day 1 s | median day 2..$N s | store after day 1 MiB | store after day $N MiB | peak RSS MiB (max over days) |"
    echo "|---|---:|---:|---:|---:|---:|"
    for tool in "${TOOLS[@]}"; do
        printf '| %s | %s | %s | %s | %s | %s |\n' "$(tool_name "$tool")" "$(fmt_s "${DAY1[$tool]}")" \
            "$(fmt_s "${MED[$tool]}")" "$(mib "${S[$tool.1]}")" "$(mib "${FINAL[$tool]}")" "$(kib_mib "${PEAK[$tool]}")"
    done
    echo
    echo "- coffer / restic: median day-2..$N time **$(ratio "${MED[coffer]}" "${MED[restic]}")**, store after day $N **$(ratio "${FINAL[coffer]}" "${FINAL[restic]}")**"
    echo "- coffer / borg: median day-2..$N time $(ratio "${MED[coffer]}" "${MED[borg]}"), store after day $N $(ratio "${FINAL[coffer]}" "${FINAL[borg]}")"
    echo "$REFULL_LINE"
    echo "- coffer backup of the unchanged tree after day $N (${KIND[same]}): stored $(human "${SNAP[same]}") = **$(pct "${SNAP[same]}" "${SNAP[1]}")** of the day-1 full's $(mib "${SNAP[1]}") MiB (tar stream $(human "$(jq -r '.manifest.sources[0].encrypted_bytes' "$LOGDIR/coffer.daysame.out")"), checksum list $(human "$(jq -r '.manifest.sources[0].checksums.encrypted_bytes // 0' "$LOGDIR/coffer.daysame.out")")); $(fmt_s "${T[coffer.same]}") s, peak RSS $(kib_mib "${R[coffer.same]}") MiB"
    if ((N > 1)); then
        echo "  (a differential holds everything changed since its full, so this is days 2..$N's changes again: day $N's differential stored $(human "${SNAP[$N]}"); the unchanged one differs from it by $(human "$((SNAP[same] - ${SNAP[$N]}))" 1))"
    fi
    echo "- the same for restic: $(fmt_s "${T[restic.same]}") s, store $(human "$((${S[restic.same]} - ${S[restic.$N]}))" 1); borg: $(fmt_s "${T[borg.same]}") s, store $(human "$((${S[borg.same]} - ${S[borg.$N]}))" 1)"
    if [[ -n $RESTORE_LINE ]]; then echo "$RESTORE_LINE"; fi
    echo "- local state beside the stores (not counted above): coffer state_dir $(mib "$STATE_BYTES") MiB, restic cache $(mib "$RCACHE_BYTES") MiB, borg cache and config $(mib "$BCACHE_BYTES") MiB"
    echo
    echo "## Per day"
    echo
    echo "Changes: files modified/added/deleted before the day's backups; \"MiB written\": the new bytes"
    echo "written (a modified file's appended or rewritten bytes plus the new files); \"changed files MiB\":"
    echo "the whole size of the modified and new files (what a file-level differential stores again)."
    echo "coffer snapshot MiB is the day's \`.stored_bytes\`; store MiB is du -sb of the store after the day."
    echo
    echo "| day | changes | MiB written | changed files MiB | coffer kind | coffer s | coffer snapshot MiB | coffer store MiB | restic s | restic store MiB | borg s | borg store MiB |"
    echo "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"
    for ((d = 1; d <= N + 1; d++)); do
        label=$d
        chg="—"
        w="—"
        f="—"
        if ((d > N)); then
            label=same
            chg="none"
        elif ((d > 1)); then
            read -r chg w f <<<"${CHG[$d]}"
            w=$(mib "$w")
            f=$(mib "$f")
        else
            chg="(initial)"
        fi
        printf '| %s | %s | %s | %s | %s | %.2f | %s | %s | %.2f | %s | %.2f | %s |\n' \
            "$([[ $label == same ]] && echo "$N+ (unchanged)" || echo "$d")" "$chg" "$w" "$f" "${KIND[$label]}" \
            "${T[coffer.$label]}" "$(mib "${SNAP[$label]}")" "$(mib "${S[coffer.$label]}")" \
            "${T[restic.$label]}" "$(mib "${S[restic.$label]}")" "${T[borg.$label]}" "$(mib "${S[borg.$label]}")"
    done
    echo
    echo "Peak RSS per day (MiB):"
    echo
    echo "| day | coffer | restic | borg |"
    echo "|---|---:|---:|---:|"
    for ((d = 1; d <= N + 1; d++)); do
        label=$d
        ((d <= N)) || label=same
        printf '| %s | %s | %s | %s |\n' "$([[ $label == same ]] && echo "$N+ (unchanged)" || echo "$d")" \
            "$(kib_mib "${R[coffer.$label]}")" "$(kib_mib "${R[restic.$label]}")" "$(kib_mib "${R[borg.$label]}")"
    done
} | tee "$RESULTS"
log "results written to $RESULTS (logs in $LOGDIR)"
