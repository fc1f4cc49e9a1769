#!/usr/bin/env bash
# Tests the Debian package for real, as root, and leaves the machine as it found it:
# lintian reports no error; `dpkg -i` installs it (binary, user, modes and owners); a backup
# runs as the `coffer` user with a config `coffer init` filled in; an upgrade over itself keeps
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
for t in dpkg lintian runuser getent deluser; do
    command -v "$t" >/dev/null || die "$t is missing (apt-get install dpkg lintian util-linux adduser)"
done
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
cleanup() {
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

log "coffer init, then a backup as the coffer user"
install -d -o coffer -g coffer -m 0700 "$WORK/store"
install -d -m 0755 "$WORK/site"
echo "invoice 1" >"$WORK/site/invoice.txt"
# (Its own `coffer check` runs as root, which the coffer-owned state folder fails: the check
# that counts is the one as the user the daemon runs as, below.)
coffer --config /etc/coffer/coffer.toml init --force --dir "$WORK/site" \
    --store "local:$WORK/store" --generate-key "$WORK/identity.txt" --state-dir /var/lib/coffer >&2 || true
runuser -u coffer -- coffer --config /etc/coffer/coffer.toml check >&2 || die "coffer check as coffer"
[[ $(mode /etc/coffer/coffer.toml) == "640 root:coffer" ]] || die "init's config is $(mode /etc/coffer/coffer.toml)"
runuser -u coffer -- coffer --config /etc/coffer/coffer.toml backup >&2 || die "backup as coffer"
id=$(runuser -u coffer -- coffer --config /etc/coffer/coffer.toml list --json | sed -n 's/.*"id": "\(.*\)".*/\1/p' | head -1)
[[ -n $id ]] || die "no snapshot listed"
coffer --config /etc/coffer/coffer.toml restore "$id" --to "$WORK/restored" --identity "$WORK/identity.txt" >&2
diff -r "$WORK/site" "$WORK/restored" || die "the restore differs"

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
