#!/usr/bin/env bash
# Benchmark coffer against a tar|gzip|age baseline and restic on a generated site.
#
# Usage: scripts/bench.sh            (as root on a fresh Debian box: installs age, restic, time, pigz)
#
# Environment:
#   BENCH_SIZE_MB  size of the generated site in MiB (default 1024): half incompressible
#                  "attachments", half CSV/log text (gzip -6 ratio about 4-5x)
#   BENCH_RUNS     runs per measured command (default 3); the median wall time is reported,
#                  peak RSS is the maximum over runs
#   BENCH_DIR      work folder (default /tmp/coffer-bench); needs about 3x BENCH_SIZE_MB free.
#                  The site is generated once and reused while its size matches.
#   COFFER_BIN     coffer binary to test; if unset, `cargo build --release --locked` is run
#                  and target/release/coffer is used
#   BENCH_PIGZ     set to 0 to skip the extra tar|pigz|age baseline (default: run it if pigz exists)
#
# Results: Markdown on stdout and in $BENCH_DIR/results.md; progress on stderr;
# per-command logs and GNU time reports in $BENCH_DIR/logs/.
set -euo pipefail
export LC_ALL=C

if [[ ${1:-} == -h || ${1:-} == --help ]]; then
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
    exit 0
fi

BENCH_SIZE_MB=${BENCH_SIZE_MB:-1024}
BENCH_RUNS=${BENCH_RUNS:-3}
BENCH_DIR=${BENCH_DIR:-/tmp/coffer-bench}
BENCH_PIGZ=${BENCH_PIGZ:-1}
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
GENERATOR_VERSION=1

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'bench.sh: error: %s\n' "$*" >&2; exit 1; }

[[ $BENCH_SIZE_MB =~ ^[1-9][0-9]*$ ]] || die "BENCH_SIZE_MB must be a positive integer (got '$BENCH_SIZE_MB')"
[[ $BENCH_RUNS =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS must be a positive integer (got '$BENCH_RUNS')"

# ---------------------------------------------------------------- 1. tools
ensure_tools() {
    local missing=() optional=() t
    { command -v age && command -v age-keygen; } >/dev/null || missing+=(age)
    command -v restic >/dev/null || missing+=(restic)
    [[ -x /usr/bin/time ]] || missing+=(time)
    command -v python3 >/dev/null || missing+=(python3)
    if [[ $BENCH_PIGZ != 0 ]] && ! command -v pigz >/dev/null; then optional+=(pigz); fi
    if ((${#missing[@]} + ${#optional[@]} > 0)); then
        if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
            log "installing with apt-get: ${missing[*]} ${optional[*]}"
            apt-get update -qq >&2
            if ((${#missing[@]} > 0)); then
                DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
            fi
            if ((${#optional[@]} > 0)); then
                DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${optional[@]}" >&2 ||
                    log "could not install pigz (optional); skipping the pigz baseline"
            fi
        elif ((${#missing[@]} > 0)); then
            die "missing tools: ${missing[*]}. Run this script as root (it installs them with apt-get), or install them first: sudo apt-get install -y ${missing[*]}"
        else
            log "pigz is not installed (optional): skipping the pigz baseline (sudo apt-get install -y pigz to add it)"
        fi
    fi
    for t in age age-keygen restic python3 tar gzip diff find awk sort; do
        command -v "$t" >/dev/null || die "$t is still missing"
    done
    [[ -x /usr/bin/time ]] || die "/usr/bin/time is still missing (Debian package 'time')"
    [[ $(/usr/bin/time -v true 2>&1) == *'Maximum resident set size'* ]] ||
        die "/usr/bin/time is not GNU time (no -v); install the Debian package 'time'"
    USE_PIGZ=0
    if [[ $BENCH_PIGZ != 0 ]] && command -v pigz >/dev/null; then USE_PIGZ=1; fi
}
ensure_tools

# ---------------------------------------------------------------- 2. coffer
if [[ -n ${COFFER_BIN:-} ]]; then
    if [[ $COFFER_BIN != */* ]]; then
        COFFER_BIN=$(command -v "$COFFER_BIN") || die "COFFER_BIN '$COFFER_BIN' not found in PATH"
    fi
    COFFER_BIN=$(cd "$(dirname "$COFFER_BIN")" && pwd)/$(basename "$COFFER_BIN")
else
    command -v cargo >/dev/null ||
        die "cargo not found: install Rust (https://rustup.rs) or set COFFER_BIN to a coffer binary"
    log "building coffer (cargo build --release --locked)"
    (cd "$REPO_ROOT" && cargo build --release --locked >&2)
    COFFER_BIN=$REPO_ROOT/target/release/coffer
fi
[[ -x $COFFER_BIN ]] || die "coffer binary $COFFER_BIN is not executable"
COFFER_VERSION=$("$COFFER_BIN" --version) || die "$COFFER_BIN --version failed"

# ---------------------------------------------------------------- work dir
mkdir -p "$BENCH_DIR"
BENCH_DIR=$(cd "$BENCH_DIR" && pwd -P)
[[ $BENCH_DIR != / ]] || die "BENCH_DIR must not be /"
case $BENCH_DIR in *'"'* | *\\*) die "BENCH_DIR must not contain quotes or backslashes" ;; esac
SITE=$BENCH_DIR/site
STAMP=$BENCH_DIR/site.stamp
KEY=$BENCH_DIR/key.txt
CFG=$BENCH_DIR/coffer.toml
STORE=$BENCH_DIR/store
STATE=$BENCH_DIR/state
RESTORED=$BENCH_DIR/restored
BASE_OUT=$BENCH_DIR/baseline.tar.gz.age
PIGZ_OUT=$BENCH_DIR/baseline-pigz.tar.gz.age
RREPO=$BENCH_DIR/restic
LOGDIR=$BENCH_DIR/logs
RESULTS=$BENCH_DIR/results.md
export RESTIC_PASSWORD=bench RESTIC_CACHE_DIR=$BENCH_DIR/restic-cache

cleanup_outputs() {
    rm -rf "$STORE" "$STATE" "$RESTORED" "$BASE_OUT" "$PIGZ_OUT" "$RREPO" "$RESTIC_CACHE_DIR" "$SITE.tmp"
}
trap cleanup_outputs EXIT
cleanup_outputs
rm -rf "$LOGDIR"
mkdir -p "$LOGDIR"

tree_bytes() { find "$1" -type f -printf '%s\n' | awk '{s += $1} END {printf "%d\n", s}'; }

# ---------------------------------------------------------------- 3. site
want_stamp="size_mib=$BENCH_SIZE_MB generator=v$GENERATOR_VERSION"
if [[ -d $SITE && -f $STAMP && $(cat "$STAMP") == "$want_stamp" ]]; then
    log "reusing site $SITE ($want_stamp)"
else
    log "generating a $BENCH_SIZE_MB MiB site in $SITE"
    rm -rf "$SITE" "$STAMP" "$SITE.tmp"
    python3 - "$SITE.tmp" "$BENCH_SIZE_MB" >&2 <<'PY'
import math
import os
import random
import sys
from array import array
from itertools import accumulate

site, total_mib = sys.argv[1], int(sys.argv[2])
MiB = 1 << 20
total = total_mib * MiB
att_total = total // 2
txt_total = total - att_total

# ---- attachments: incompressible, 64 KiB .. 8 MiB, log-uniform sizes ----
r = random.Random("coffer-bench-attachments-v1")
EXT = ["pdf", "jpg", "png", "zip", "mp4", "docx", "xlsx", "heic"]
done = i = 0
natt = 0
while done < att_total:
    left = att_total - done
    size = int(math.exp(r.uniform(math.log(64 << 10), math.log(8 << 20))))
    if size >= left or left - size < (64 << 10):
        size = left
    vis = "private" if r.random() < 0.7 else "public"
    d = os.path.join(site, vis, "files", str(2019 + int(r.random() * 6)), "%02d" % (1 + int(r.random() * 12)))
    os.makedirs(d, exist_ok=True)
    name = "%016x.%s" % (r.getrandbits(64), EXT[int(r.random() * len(EXT))])
    fr = random.Random("att-%d" % i)
    with open(os.path.join(d, name), "wb") as f:
        n = size
        while n:
            k = min(n, 4 * MiB)
            f.write(fr.randbytes(k))
            n -= k
    done += size
    i += 1
natt = i

# ---- text: CSV exports and logs with realistic repetition ----
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
    """Approximately nbytes of rows, as a list of str pieces."""
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


done = i = 0
while done < txt_total:
    left = txt_total - done
    size = int(math.exp(r.uniform(math.log(4 << 10), math.log(2 << 20))))
    if size >= left or left - size < (4 << 10):
        size = left
    x = r.random()
    dayn = int(r.random() * 1500)
    y, m, dd = 2021 + dayn // 336, 1 + dayn // 28 % 12, 1 + dayn % 28
    date = "%04d-%02d-%02d" % (y, m, dd)
    if x < 0.5:
        kind, rel, day = "csv", "private/exports/%d/orders-%s-%04d.csv" % (y, date, i), "," + date + " "
    elif x < 0.85:
        kind, rel, day = "log", "public/logs/%d/access-%s-%04d.log" % (y, date, i), date + "T"
    else:
        kind, rel, day = "log", "private/logs/app-%s-%04d.log" % (date, i), date + "T"
    fr = random.Random("txt-%d" % i)
    p = os.path.join(site, rel)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    data = ((CSV_HEAD if kind == "csv" else "") + "".join(text_rows(fr, kind, size, day))).encode()
    data = data[:size - 1] + b"\n"
    with open(p, "wb") as f:
        f.write(data)
    done += size
    i += 1
print("generated %d attachments (%d MiB) and %d text files (%d MiB)" % (natt, att_total >> 20, i, txt_total >> 20))
PY
    mv "$SITE.tmp" "$SITE"
    printf '%s\n' "$want_stamp" >"$STAMP"
fi
SITE_BYTES=$(tree_bytes "$SITE")
SITE_FILES=$(find "$SITE" -type f | wc -l)
SITE_MIB=$(awk -v b="$SITE_BYTES" 'BEGIN {printf "%.1f", b / 1048576}')

# ---------------------------------------------------------------- 4. key, 5. config
if [[ ! -f $KEY ]]; then
    age-keygen -o "$KEY" 2>/dev/null
fi
RECIPIENT=$(age-keygen -y "$KEY")
cat >"$CFG" <<TOML
state_dir = "$STATE"

[encryption]
recipients = ["$RECIPIENT"]
identity_file = "$KEY"

[store]
type = "local"
path = "$STORE"
part_size = "64MiB"

[compression]
level = 6

[[source]]
name = "files"
type = "directory"
path = "$SITE"
TOML

# ---------------------------------------------------------------- 6. measurements
declare -A WALLS=() RSS_KB=() STORED=()
SIGN_SHARE=""
RUN=0

# measure KEY CMD...: runs CMD under GNU time -v, records its wall time and peak RSS.
measure() {
    local key=$1 tf lf wall rss
    shift
    tf=$LOGDIR/$key.run$RUN.time
    lf=$LOGDIR/$key.run$RUN.log
    if ! /usr/bin/time -v -o "$tf" "$@" >"$lf" 2>&1; then
        printf 'bench.sh: error: %s failed (run %d): %s\n--- last lines of %s:\n' "$key" "$RUN" "$*" "$lf" >&2
        tail -n 25 "$lf" >&2
        exit 1
    fi
    wall=$(awk -F': ' '/Elapsed \(wall clock\) time/ {n = split($NF, a, ":"); s = 0
        for (i = 1; i <= n; i++) s = s * 60 + a[i]; print s}' "$tf")
    rss=$(awk -F': ' '/Maximum resident set size/ {print $NF}' "$tf")
    [[ -n $wall && -n $rss ]] || die "could not parse $tf"
    WALLS[$key]="${WALLS[$key]:-} $wall"
    if ((rss > ${RSS_KB[$key]:-0})); then RSS_KB[$key]=$rss; fi
    log "  $key: ${wall} s, peak RSS $((rss / 1024)) MiB"
}

# check_restore NAME DIR: the restored tree must equal the site, byte for byte.
check_restore() {
    if ! diff -r -q "$SITE" "$2" >"$LOGDIR/$1.run$RUN.diff" 2>&1; then
        printf 'bench.sh: error: %s restore differs from the site (run %d):\n' "$1" "$RUN" >&2
        head -n 20 "$LOGDIR/$1.run$RUN.diff" >&2
        exit 1
    fi
}

fresh_restore_dir() { rm -rf "$RESTORED" && mkdir -p "$RESTORED"; }

for ((RUN = 1; RUN <= BENCH_RUNS; RUN++)); do
    log "run $RUN/$BENCH_RUNS"

    # A. baseline: tar | gzip -6 | age, and back
    rm -f "$BASE_OUT"
    measure base_backup bash -c 'set -euo pipefail; tar -C "$1" -cf - . | gzip -6 | age -r "$2" >"$3"' \
        bench "$SITE" "$RECIPIENT" "$BASE_OUT"
    STORED[base_backup]=$(stat -c %s "$BASE_OUT")
    fresh_restore_dir
    measure base_restore bash -c 'set -euo pipefail; age -d -i "$1" "$2" | gzip -d | tar -xf - -C "$3"' \
        bench "$KEY" "$BASE_OUT" "$RESTORED"
    check_restore base "$RESTORED"
    rm -rf "$BASE_OUT" "$RESTORED"

    if ((USE_PIGZ)); then
        rm -f "$PIGZ_OUT"
        measure pigz_backup bash -c 'set -euo pipefail; tar -C "$1" -cf - . | pigz -6 | age -r "$2" >"$3"' \
            bench "$SITE" "$RECIPIENT" "$PIGZ_OUT"
        STORED[pigz_backup]=$(stat -c %s "$PIGZ_OUT")
        fresh_restore_dir
        measure pigz_restore bash -c 'set -euo pipefail; age -d -i "$1" "$2" | pigz -d | tar -xf - -C "$3"' \
            bench "$KEY" "$PIGZ_OUT" "$RESTORED"
        check_restore pigz "$RESTORED"
        rm -rf "$PIGZ_OUT" "$RESTORED"
    fi

    # B/C. coffer backup into an empty store, then restore latest
    rm -rf "$STORE" "$STATE"
    measure coffer_backup "$COFFER_BIN" --config "$CFG" backup --json
    STORED[coffer_backup]=$(tree_bytes "$STORE")
    # What signing adds (signing the manifest and storing manifest.json.sig), as a share of
    # the same backup's own time; absent in coffers from before signatures.
    share=$(python3 -c 'import json,sys
t = open(sys.argv[1]).read()
r, _ = json.JSONDecoder().raw_decode(t[t.index("{"):])
print("%.6f" % (r["signing_seconds"] / r["seconds"]) if "signing_seconds" in r else "")' \
        "$LOGDIR/coffer_backup.run$RUN.log" 2>/dev/null || true)
    if [[ -n $share ]]; then SIGN_SHARE+=" $share"; fi
    rm -rf "$RESTORED"
    measure coffer_restore "$COFFER_BIN" --config "$CFG" restore latest --to "$RESTORED"
    check_restore coffer "$RESTORED"
    # A restore drill of the same snapshot: download + check every part, extract, then hash
    # every restored file against the backup's per-file sha256 list.
    if "$COFFER_BIN" drill --help >/dev/null 2>&1; then
        measure coffer_drill "$COFFER_BIN" --config "$CFG" drill
        check_restore coffer-drill "$STATE/drill/files"
    fi
    rm -rf "$STORE" "$STATE" "$RESTORED"

    # D. restic: fresh repository, first backup, restore latest
    rm -rf "$RREPO" "$RESTIC_CACHE_DIR"
    restic init --repo "$RREPO" >"$LOGDIR/restic_init.run$RUN.log" 2>&1 ||
        { cat "$LOGDIR/restic_init.run$RUN.log" >&2; die "restic init failed"; }
    # Back up "." from inside the site so the snapshot (and the restore) holds the site's files at its root.
    measure restic_backup env -C "$SITE" restic backup --repo "$RREPO" .
    STORED[restic_backup]=$(tree_bytes "$RREPO")
    fresh_restore_dir
    measure restic_restore restic restore latest --repo "$RREPO" --target "$RESTORED"
    check_restore restic "$RESTORED"
    rm -rf "$RREPO" "$RESTIC_CACHE_DIR" "$RESTORED"
done

# ---------------------------------------------------------------- 7. report
median() {
    # shellcheck disable=SC2086 # split the space-separated list on purpose
    printf '%s\n' $1 | sort -g | awk '{a[NR] = $1} END {
        if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
declare -A MED=()
for k in "${!WALLS[@]}"; do MED[$k]=$(median "${WALLS[$k]}"); done

mib() { awk -v b="$1" 'BEGIN {printf "%.1f", b / 1048576}'; }
rate() { awk -v b="$SITE_BYTES" -v s="$1" 'BEGIN {if (s > 0) printf "%.1f", b / 1048576 / s; else print "n/a"}'; }
# ratio A B: A / B to two decimals, "n/a" when B is 0
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "n/a"}'; }

row() { # tool operation key
    local key=$3 stored="—"
    if [[ -n ${STORED[$key]:-} ]]; then stored=$(mib "${STORED[$key]}"); fi
    printf '| %s | %s | %.2f | %s | %s | %s |\n' "$1" "$2" "${MED[$key]}" "$(rate "${MED[$key]}")" \
        "$(mib $((RSS_KB[$key] * 1024)))" "$stored"
}

cpu_model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
[[ -n $cpu_model ]] || cpu_model=$(lscpu 2>/dev/null | awk -F': *' '/^Model name/ {print $2; exit}')
mem_total=$(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)
fs_type=$(df -PT "$BENCH_DIR" | awk 'NR == 2 {print $2}')
att_bytes=$(find "$SITE" -path '*/files/*' -type f -printf '%s\n' | awk '{s += $1} END {printf "%d", s}')

{
    echo "# coffer benchmark"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'), host kernel $(uname -r) ($(uname -m))"
    echo "- CPU: ${cpu_model:-unknown}; nproc: $(nproc); memory: $mem_total; $BENCH_DIR on ${fs_type:-?}"
    echo "- coffer: $COFFER_VERSION ($COFFER_BIN)"
    echo "- age: $(age --version); restic: $(restic version | head -n 1)"
    echo "- $(gzip --version | head -n 1); $(tar --version | head -n 1)$( ((USE_PIGZ)) && echo "; $(pigz --version 2>&1 | head -n 1)")"
    echo "- site: $SITE_FILES files, $SITE_MIB MiB ($(mib "$att_bytes") MiB incompressible attachments, $(mib $((SITE_BYTES - att_bytes))) MiB CSV/log text)"
    echo "- $BENCH_RUNS run(s) per command, median wall time; peak RSS = max over runs; warm page cache (nothing dropped)"
    echo
    echo "| tool | operation | median s | MB/s (input MiB / s) | peak RSS MiB | stored MiB |"
    echo "|---|---|---:|---:|---:|---:|"
    row "baseline tar+gzip -6+age" backup base_backup
    row "baseline tar+gzip -6+age" restore base_restore
    if ((USE_PIGZ)); then
        row "baseline tar+pigz -6+age" backup pigz_backup
        row "baseline tar+pigz -6+age" restore pigz_restore
    fi
    row coffer backup coffer_backup
    row coffer restore coffer_restore
    if [[ -n ${MED[coffer_drill]:-} ]]; then
        row coffer "drill (restore + all checks)" coffer_drill
    fi
    row "restic $(restic version | awk '{print $2}')" backup restic_backup
    row "restic $(restic version | awk '{print $2}')" restore restic_restore
    echo
    echo "Baseline peak RSS is that of the largest single process in the pipeline (GNU time on the bash wrapper reports the maximum over its children), not their sum."
    echo
    echo "- coffer backup throughput / baseline backup throughput: **$(ratio "${MED[base_backup]}" "${MED[coffer_backup]}")x**"
    echo "- coffer restore throughput / baseline restore throughput: **$(ratio "${MED[base_restore]}" "${MED[coffer_restore]}")x**"
    echo "- coffer stored size / baseline size: **$(ratio "${STORED[coffer_backup]}" "${STORED[base_backup]}")x**"
    if [[ -n $SIGN_SHARE ]]; then
        echo "- signing the snapshot (sign + store manifest.json.sig) / coffer backup time: $(printf '%s\n' $SIGN_SHARE | sort -g | awk '{a[NR] = $1} END {printf "%.4f%%", 100 * a[int((NR + 1) / 2)]}') (median over runs)"
    fi
    if [[ -n ${MED[coffer_drill]:-} ]]; then
        echo "- coffer drill time / coffer restore time: $(ratio "${MED[coffer_drill]}" "${MED[coffer_restore]}")x (the drill downloads first, then restores, then hashes every file)"
    fi
    if ((USE_PIGZ)); then
        echo "- coffer backup throughput / pigz baseline backup throughput: $(ratio "${MED[pigz_backup]}" "${MED[coffer_backup]}")x"
    fi
    echo "- coffer backup throughput / restic backup throughput: $(ratio "${MED[restic_backup]}" "${MED[coffer_backup]}")x"
    echo "- coffer restore throughput / restic restore throughput: $(ratio "${MED[restic_restore]}" "${MED[coffer_restore]}")x"
    echo "- coffer stored size / restic stored size: $(ratio "${STORED[coffer_backup]}" "${STORED[restic_backup]}")x"
} | tee "$RESULTS"
log "results written to $RESULTS (logs in $LOGDIR)"
