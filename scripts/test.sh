#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what the tests need
# (sqlite3, zstd, gzip, coreutils, age, rclone, man-db, bsdutils' script, jq, promtool
# and chromium from Debian; Azurite from npm, pinned in package-lock.json; moto's
# S3 server and boto3 from PyPI, pinned here, in .venv-moto), then runs every
# test of the workspace.
# Azurite is started by the tests themselves on 127.0.0.1 with a temporary
# data folder.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for tool in sqlite3 zstd gzip gunzip sha256sum age age-keygen rclone man script jq faketime; do
  command -v "$tool" >/dev/null 2>&1 || need+=("$tool")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "Installing missing tools: ${need[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq sqlite3 zstd gzip coreutils age rclone man-db bsdutils jq faketime >/dev/null
fi

# systemd-analyze checks the printed units (Debian package `systemd`; no
# systemd needs to run).
if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "Installing systemd-analyze (systemd)…"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd >/dev/null
fi

# promtool checks the metrics output (Debian package `prometheus`).
if ! command -v promtool >/dev/null 2>&1; then
  echo "Installing promtool (prometheus)…"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

# Headless Chromium renders the HTML report (Debian package `chromium`).
if ! command -v chromium >/dev/null 2>&1; then
  echo "Installing Chromium…"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi

if [ -f package-lock.json ]; then
  if [ ! -x node_modules/.bin/azurite-blob ]; then
    echo "Installing Azurite (npm ci)…"
    npm ci --no-audit --no-fund --loglevel=error
  fi
fi

# moto's S3 server and boto3 (the tests start moto themselves on 127.0.0.1).
# Keep the pins in step with MOTO_PIN in crates/backup-testkit/src/moto.rs.
if [ ! -x .venv-moto/bin/moto_server ] || [ ! -x .venv-moto/bin/python ]; then
  echo "Installing moto and boto3 (pip, .venv-moto)…"
  python3 -m venv .venv-moto
  .venv-moto/bin/pip install -q 'moto[server]==5.2.5' 'boto3==1.44.8'
fi

# `cargo test` builds the binary and the examples too (with the test
# features, so nothing is compiled twice). The suite runs on the release
# build: the binary users run, and the one build the Debian package is made
# from in CI (scripts/deb.sh). For quick local iteration, `cargo test`.
cargo test --release --workspace --no-fail-fast "$@"

# One runnable example per way into the library; each asserts its outcome
# and exits non-zero when it does not hold.
for example in backup_to_folder restore_latest custom_sink progress_and_cancel in_async_service; do
  echo "example $example:"
  cargo run --release --quiet --example "$example"
done
