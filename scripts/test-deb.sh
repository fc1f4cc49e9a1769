#!/usr/bin/env bash
# Tests the Debian package for real, as root, and leaves the machine as it found it:
# lintian reports no error; `dpkg -i` installs it (binary, user, modes and owners); a backup
# runs as the `coffer` user with a config `coffer init --frappe-bench` filled in (a bench whose
# site is a real MariaDB database, plus a folder); an upgrade over itself keeps
# an edited conffile; `dpkg -r` keeps the config and the state; `dpkg -P` removes them and
# never the store.
#
# Usage: sudo scripts/test-deb.sh [DEB]     (default: builds one with scripts/build-deb.sh)
set -euo pipefail
export LC_ALL=C
cd "$(dirname "${BASH_SOURCE[0]}")/.."

die() { printf 'test-deb.sh: FAILED: %s\n' "$*" >&2; exit 1; }
log() { printf '==> %s\n' "$*" >&2; }
[[ $(id -u) -eq 0 ]] || die "run it as root (it installs and purges the package)"
for t in dpkg lintian runuser getent deluser mariadb; do
    command -v "$t" >/dev/null || die "$t is missing (apt-get install dpkg lintian util-linux adduser mariadb-client)"
done
maria() { mariadb -h 127.0.0.1 -P 3306 -u root "$@"; }
maria -e 'SELECT 1' >/dev/null || die "MariaDB is not reachable on 127.0.0.1:3306 (the bench's site needs it)"
if dpkg -s coffer >/dev/null 2>&1; then
    die "coffer is installed already: this test would replace it; dpkg -P coffer first"
fi
for p in /etc/coffer /var/lib/coffer; do
    [[ ! -e $p ]] || die "$p exists: this test would remove it"
done
had_user=0
getent passwd coffer >/dev/null && had_user=1

DEB=${1:-$(scripts/build-deb.sh)}
[[ -f $DEB ]] || die "no package at $DEB"
WORK=$(mktemp -d /tmp/coffer-deb-test.XXXXXX)
chmod 0755 "$WORK"
SITE_DB=coffer_deb_$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')
cleanup() {
    maria -e "DROP DATABASE IF EXISTS $SITE_DB; DROP USER IF EXISTS '$SITE_DB'@'%'" >/dev/null 2>&1 || true
    dpkg -P coffer >/dev/null 2>&1 || true
    if ((!had_user)); then
        deluser --system coffer >/dev/null 2>&1 || true
        delgroup --system coffer >/dev/null 2>&1 || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

log "lintian"
lintian --fail-on error "$DEB" >&2 || die "lintian reports errors"

log "install"
dpkg -i "$DEB" >&2
[[ $(coffer --version) == "coffer "* ]] || die "coffer --version"
[[ $(command -v coffer) == /usr/bin/coffer ]] || die "coffer is not /usr/bin/coffer"
getent passwd coffer >/dev/null || die "no coffer user"
mode() { stat -c '%a %U:%G' "$1"; }
[[ $(mode /var/lib/coffer) == "700 coffer:coffer" ]] || die "/var/lib/coffer is $(mode /var/lib/coffer)"
[[ $(mode /etc/coffer/coffer.toml) == "640 root:coffer" ]] || die "coffer.toml is $(mode /etc/coffer/coffer.toml)"
grep -q '^ExecStart=/usr/bin/coffer ' /lib/systemd/system/coffer.service || die "the unit's ExecStart"
[[ -f /usr/share/man/man1/coffer.1.gz && -f /usr/share/bash-completion/completions/coffer ]] ||
    die "man page or completions missing"
if [[ -d /run/systemd/system ]] && systemctl is-active --quiet coffer.service; then
    die "the package started the daemon"
fi

log "coffer init of a bench and a folder, then a backup as the coffer user"
install -d -o coffer -g coffer -m 0700 "$WORK/store"
install -d -m 0755 "$WORK/site"
echo "invoice 1" >"$WORK/site/invoice.txt"
# A bench as Frappe lays it out (files 0644, as bench writes them), its one site a MariaDB
# database with its own user.
bench=$WORK/frappe-bench
site=$bench/sites/shop.local
install -d -m 0755 "$bench/sites" "$bench/config" "$bench/apps/frappe" "$site/public/files" "$site/private/files"
pw=pw-$(od -An -N6 -tx1 /dev/urandom | tr -d ' ')
maria -e "CREATE DATABASE $SITE_DB; CREATE USER '$SITE_DB'@'%' IDENTIFIED BY '$pw'; \
    GRANT ALL ON $SITE_DB.* TO '$SITE_DB'@'%'; \
    CREATE TABLE $SITE_DB.tabNote (name VARCHAR(140) PRIMARY KEY); \
    INSERT INTO $SITE_DB.tabNote VALUES ('from the package test')"
printf '{"db_name": "%s", "db_password": "%s", "db_type": "mariadb"}\n' "$SITE_DB" "$pw" >"$site/site_config.json"
echo '{"db_host": "127.0.0.1"}' >"$bench/sites/common_site_config.json"
echo frappe >"$bench/sites/apps.txt"
echo "web: bench serve" >"$bench/Procfile"
echo "logo" >"$site/public/files/logo.png"
# (Its own `coffer check` runs as root, which the coffer-owned state folder fails: the check
# that counts is the one as the user the daemon runs as, below.)
coffer --config /etc/coffer/coffer.toml init --force --frappe-bench "$bench" --dir "$WORK/site" \
    --store "local:$WORK/store" --generate-key "$WORK/identity.txt" --state-dir /var/lib/coffer >&2 || true
grep -q '^type = "frappe-bench"' /etc/coffer/coffer.toml || die "init wrote no frappe-bench source"
runuser -u coffer -- coffer --config /etc/coffer/coffer.toml check >&2 || die "coffer check as coffer"
[[ $(mode /etc/coffer/coffer.toml) == "640 root:coffer" ]] || die "init's config is $(mode /etc/coffer/coffer.toml)"
runuser -u coffer -- coffer --config /etc/coffer/coffer.toml backup >&2 || die "backup as coffer"
id=$(runuser -u coffer -- coffer --config /etc/coffer/coffer.toml list --json | sed -n 's/.*"id": "\(.*\)".*/\1/p' | head -1)
[[ -n $id ]] || die "no snapshot listed"
coffer --config /etc/coffer/coffer.toml restore "$id" --to "$WORK/restored" --identity "$WORK/identity.txt" >&2
diff -r "$WORK/site" "$WORK/restored/site" || die "the folder's restore differs"
grep -q "from the package test" "$WORK/restored/shop_local-db.sql" || die "the site's dump lacks its row"
diff "$site/public/files/logo.png" "$WORK/restored/shop_local-files/public/files/logo.png" || die "the site's files differ"
grep -q '"app": "frappe"' "$WORK/restored/frappe-bench/apps.json" || die "the bench stream has no apps.json"
if grep -rq -- "$pw" /var/lib/coffer /etc/coffer; then die "the site's password was copied into coffer's files"; fi

log "upgrade over itself keeps the edited config"
echo "# edited by the operator" >>/etc/coffer/coffer.toml
dpkg -i "$DEB" >&2
tail -n 1 /etc/coffer/coffer.toml | grep -q "edited by the operator" || die "the upgrade replaced the config"

log "remove keeps config and state; purge removes them, never the store"
dpkg -r coffer >&2
[[ ! -e /usr/bin/coffer ]] || die "/usr/bin/coffer left after remove"
[[ -f /etc/coffer/coffer.toml && -f /var/lib/coffer/signing-key ]] || die "remove lost the config or the state"
dpkg -P coffer >&2
[[ ! -e /etc/coffer && ! -e /var/lib/coffer ]] || die "purge left /etc/coffer or /var/lib/coffer"
[[ -d $WORK/store/snapshots/$id ]] || die "purge touched the store"
log "ok: the package installs, backs up as coffer, upgrades, removes and purges"
