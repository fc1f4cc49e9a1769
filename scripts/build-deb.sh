#!/usr/bin/env bash
# Builds coffer's Debian package: $OUT/coffer_<version>_<arch>.deb (OUT default target/debian).
#
# Usage: scripts/build-deb.sh      (needs dpkg-deb, gzip; `cargo build --release --locked` first
#                                   unless COFFER_BIN names a release binary)
#
# It holds /usr/bin/coffer (stripped), the systemd units under /lib/systemd/system (ExecStart
# /usr/bin/coffer), /etc/coffer/coffer.toml (a commented starter, a conffile: kept on
# upgrades), the docs and the example config under /usr/share/doc/coffer, the man page and
# bash/zsh/fish completions (made by the binary itself), and the maintainer scripts in
# packaging/debian/ (the `coffer` system user, /var/lib/coffer 0700; the daemon is never
# started by the package; purge removes /etc/coffer and /var/lib/coffer, never a store).
set -euo pipefail
export LC_ALL=C
cd "$(dirname "${BASH_SOURCE[0]}")/.."

die() { printf 'build-deb.sh: error: %s\n' "$*" >&2; exit 1; }
for t in dpkg-deb dpkg gzip install; do
    command -v "$t" >/dev/null || die "$t is missing (Debian: apt-get install dpkg-dev gzip coreutils)"
done

TARGET=${CARGO_TARGET_DIR:-target}
if [[ -z ${COFFER_BIN:-} ]]; then
    cargo build --release --locked >&2
    COFFER_BIN=$TARGET/release/coffer
fi
[[ -x $COFFER_BIN ]] || die "no coffer binary at $COFFER_BIN"
VERSION=$("$COFFER_BIN" --version | awk '{print $2}')
ARCH=$(dpkg --print-architecture)
OUT=${OUT:-$TARGET/debian}
# Who the package names as its maintainer (Debian wants a real address: set yours).
DEB_MAINTAINER=${DEB_MAINTAINER:-coffer developers <coffer@example.org>}
ROOT=$OUT/coffer_${VERSION}_$ARCH
rm -rf "$ROOT"
mkdir -p "$ROOT/DEBIAN"

# The binary, stripped (the release build keeps line tables: 6x larger).
install -D -m 0755 -s "$COFFER_BIN" "$ROOT/usr/bin/coffer"

# The units, calling /usr/bin/coffer.
for unit in systemd/*.service systemd/*.timer; do
    install -d -m 0755 "$ROOT/lib/systemd/system"
    sed 's#/usr/local/bin/coffer#/usr/bin/coffer#g' "$unit" >"$ROOT/lib/systemd/system/$(basename "$unit")"
    chmod 0644 "$ROOT/lib/systemd/system/$(basename "$unit")"
done

# The starter config (a conffile; the postinst makes it root:coffer 0640 on first install).
install -D -m 0640 packaging/coffer.toml "$ROOT/etc/coffer/coffer.toml"

# Docs.
DOC=$ROOT/usr/share/doc/coffer
install -d -m 0755 "$DOC/examples"
install -m 0644 README.md docs/*.md "$DOC/"
install -m 0644 config/coffer.example.toml "$DOC/examples/"
install -m 0644 packaging/debian/copyright "$DOC/copyright"
gzip -9n <CHANGELOG.md >"$DOC/changelog.gz"
{
    printf 'coffer (%s) unstable; urgency=medium\n\n' "$VERSION"
    printf '  * Built from the coffer source tree; see changelog.gz for the changes.\n\n'
    printf ' -- %s  %s\n' "$DEB_MAINTAINER" \
        "$(date -R -u -d "@${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}")"
} | gzip -9n >"$DOC/changelog.Debian.gz"
chmod 0644 "$DOC"/*.gz

# The man page and completions, from the binary itself.
install -d -m 0755 "$ROOT/usr/share/man/man1" "$ROOT/usr/share/bash-completion/completions" \
    "$ROOT/usr/share/zsh/vendor-completions" "$ROOT/usr/share/fish/vendor_completions.d"
"$COFFER_BIN" man | gzip -9n >"$ROOT/usr/share/man/man1/coffer.1.gz"
"$COFFER_BIN" completions bash >"$ROOT/usr/share/bash-completion/completions/coffer"
"$COFFER_BIN" completions zsh >"$ROOT/usr/share/zsh/vendor-completions/_coffer"
"$COFFER_BIN" completions fish >"$ROOT/usr/share/fish/vendor_completions.d/coffer.fish"
chmod 0644 "$ROOT/usr/share/man/man1/coffer.1.gz" "$ROOT"/usr/share/*/*/coffer* \
    "$ROOT/usr/share/zsh/vendor-completions/_coffer"

# The starter config is 0640 on purpose (it names the files that hold secrets).
install -d -m 0755 "$ROOT/usr/share/lintian/overrides"
echo "coffer: non-standard-file-perm 0640 != 0644 [etc/coffer/coffer.toml]" \
    >"$ROOT/usr/share/lintian/overrides/coffer"
chmod 0644 "$ROOT/usr/share/lintian/overrides/coffer"

# Control files.
install -m 0755 packaging/debian/postinst packaging/debian/prerm packaging/debian/postrm "$ROOT/DEBIAN/"
echo /etc/coffer/coffer.toml >"$ROOT/DEBIAN/conffiles"
SIZE=$(du -sk --exclude=DEBIAN "$ROOT" | cut -f1)
cat >"$ROOT/DEBIAN/control" <<CONTROL
Package: coffer
Version: $VERSION
Architecture: $ARCH
Maintainer: $DEB_MAINTAINER
Installed-Size: $SIZE
Depends: libc6 (>= 2.34), adduser, init-system-helpers (>= 1.54~)
Recommends: ca-certificates
Suggests: age, postgresql-client, mariadb-client, sqlite3
Section: admin
Priority: optional
Description: encrypted backups of business servers that restore
 coffer backs up folders and databases (PostgreSQL, MariaDB, SQLite, whole
 Frappe/ERPNext sites) into a local folder or Google Drive on a schedule:
 age-encrypted to public keys (the backup host cannot read its backups),
 signed, pruned by retention, verified and drilled, with alerts by email,
 Sentry or a heartbeat. Snapshots restore with coffer or with stock age and
 GNU tar.
CONTROL
dpkg-deb --root-owner-group -Zxz --build "$ROOT" "$OUT/" >&2
echo "$OUT/coffer_${VERSION}_$ARCH.deb"
