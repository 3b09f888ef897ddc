#!/usr/bin/env bash
# The Debian package, from the release build the test suite ran on (scripts/test.sh):
#   bash scripts/deb.sh                  -> target/debian/sqlite-backup_<version>_<arch>.deb
#   bash scripts/deb.sh --tools-only     only installs cargo-deb (CI does this in the background
#                                        while the tests run)
#   bash scripts/deb.sh --install-check  also installs it with dpkg (as root), checks what the
#                                        installed paths do, and removes and purges it again (CI).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
if ! command -v cargo-deb >/dev/null 2>&1; then
  echo "Installing cargo-deb…"
  cargo install cargo-deb --locked --version 3.8.0
fi
[ "${1:-}" = "--tools-only" ] && exit 0
# The binary alone, without the test-only features `cargo test` unifies in: only the
# workspace crates those features touch are compiled again.
cargo build --release --locked -p backup-cli

# cargo-deb computes the package's library dependencies with dpkg-shlibdeps.
if ! command -v dpkg-shlibdeps >/dev/null 2>&1; then
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends dpkg-dev >/dev/null
fi

bin="$CARGO_TARGET_DIR/release/sqlite-backup"
# cargo-deb reads asset paths that start with target/release from the real target folder.
assets="$CARGO_TARGET_DIR/release/deb-assets"
rm -rf "$assets"
mkdir -p "$assets/man"
"$bin" man "$assets/man"
"$bin" completions bash > "$assets/sqlite-backup.bash"
"$bin" completions zsh > "$assets/_sqlite-backup"
"$bin" completions fish > "$assets/sqlite-backup.fish"
# The units are the ones `schedule print` gives for the packaged config, pointed at the
# installed binary and config; each `# ---- NAME ----` line starts a file.
"$bin" --config contrib/debian/sqlite-backup.toml schedule print --systemd --user sqlite-backup --interval 4h \
  | sed -e "s#$(realpath "$bin")#/usr/bin/sqlite-backup#g" \
        -e "s#$(realpath contrib/debian/sqlite-backup.toml)#/etc/sqlite-backup.toml#g" \
  | awk -v dir="$assets" '/^# ---- .* ----$/ { file = dir "/" $3; next } file { print > file }'
for unit in sqlite-backup.service sqlite-backup.timer; do
  test -s "$assets/$unit" || { echo "schedule print gave no $unit" >&2; exit 1; }
  if grep -q "$PWD" "$assets/$unit"; then
    echo "$unit still names the build folder:" >&2; cat "$assets/$unit" >&2; exit 1
  fi
done
cargo deb -p backup-cli --no-build --locked
deb=$(ls -t "$CARGO_TARGET_DIR"/debian/sqlite-backup_*.deb | head -1)
echo "Built $deb ($(du -h "$deb" | cut -f1))"

[ "${1:-}" = "--install-check" ] || exit 0

fail() { echo "deb check: $*" >&2; exit 1; }
$SUDO dpkg -i "$deb"
[ "$(command -v sqlite-backup)" = /usr/bin/sqlite-backup ] || fail "sqlite-backup is not /usr/bin/sqlite-backup"
sqlite-backup --version
sqlite-backup --version | grep -q "sqlite_dbpage: yes" || fail "the packaged binary lacks the fast path"
getent passwd sqlite-backup >/dev/null || fail "no sqlite-backup user"
[ "$(stat -c %U /var/lib/sqlite-backup/backups)" = sqlite-backup ] || fail "/var/lib/sqlite-backup/backups is not the service user's"
man -w sqlite-backup >/dev/null || fail "man sqlite-backup finds no page"
man -w sqlite-backup-restore >/dev/null || fail "no page for sqlite-backup restore"
bash -c 'source /usr/share/bash-completion/completions/sqlite-backup && complete -p sqlite-backup' >/dev/null \
  || fail "the bash completion does not load"
for f in /usr/share/zsh/vendor-completions/_sqlite-backup /usr/share/fish/vendor_completions.d/sqlite-backup.fish; do
  [ -s "$f" ] || fail "$f is missing"
done
units=(/usr/lib/systemd/system/sqlite-backup.service /usr/lib/systemd/system/sqlite-backup.timer)
systemd-analyze verify "${units[@]}"
systemd-analyze security --offline=true --threshold=30 "${units[0]}" | tail -1

# With no --config, from the root folder: the packaged config is found, and it has no database.
status=0; out=$(cd / && sqlite-backup status 2>&1) || status=$?
[ "$status" = 2 ] && [[ "$out" == *"/etc/sqlite-backup.toml configures no [[database]]"* ]] \
  || fail "status without --config: exit $status, $out"

# A backup of a demo database by the service user, into the packaged state and backup folders.
work=$(mktemp -d)
sqlite-backup demo --dir "$work/demo" >/dev/null
chown -R sqlite-backup:sqlite-backup "$work"
{ cat /etc/sqlite-backup.toml; printf '\n[[database]]\nlabel = "demo"\npath = "%s"\n' "$work/demo/app.db"; } > "$work/pkg.toml"
runuser -u sqlite-backup -- sqlite-backup --config "$work/pkg.toml" backup --tag deb
ls /var/lib/sqlite-backup/backups/demo-deb-*.db.zst >/dev/null || fail "no backup in /var/lib/sqlite-backup/backups"
runuser -u sqlite-backup -- sqlite-backup --config "$work/pkg.toml" verify --latest demo
rm -rf "$work"

$SUDO dpkg -r sqlite-backup
[ ! -e /usr/bin/sqlite-backup ] || fail "dpkg -r left /usr/bin/sqlite-backup"
[ -e /etc/sqlite-backup.toml ] || fail "dpkg -r removed the config (a conffile stays until purge)"
$SUDO dpkg -P sqlite-backup
[ ! -e /etc/sqlite-backup.toml ] || fail "dpkg -P left /etc/sqlite-backup.toml"
ls /var/lib/sqlite-backup/backups/demo-deb-*.db.zst >/dev/null || fail "purge deleted the backups"
if dpkg -s sqlite-backup >/dev/null 2>&1; then fail "still installed after dpkg -P"; fi
# This machine's own leftovers, so that a second run starts the same way.
$SUDO rm -rf /var/lib/sqlite-backup
$SUDO userdel sqlite-backup
echo "deb check: installed, backed up, removed and purged cleanly"
