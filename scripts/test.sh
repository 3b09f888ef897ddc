#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what the tests need
# (sqlite3, zstd, gzip, coreutils from Debian; Azurite from npm, pinned in
# package-lock.json), then runs every test of the workspace. Azurite is
# started by the tests themselves on 127.0.0.1 with a temporary data folder.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for tool in sqlite3 zstd gzip gunzip sha256sum; do
  command -v "$tool" >/dev/null 2>&1 || need+=("$tool")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "Installing missing tools: ${need[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq sqlite3 zstd gzip coreutils >/dev/null
fi

if [ -f package-lock.json ]; then
  if [ ! -x node_modules/.bin/azurite-blob ]; then
    echo "Installing Azurite (npm ci)…"
    npm ci --no-audit --no-fund --loglevel=error
  fi
fi

# The end-to-end tests run the real binary and the examples: build them first.
cargo build --workspace --bins --examples
cargo test --workspace --no-fail-fast "$@"
