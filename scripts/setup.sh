#!/usr/bin/env bash
# Installs what the tests need and a fresh machine lacks: the tansu broker
# (built from crates.io), Prometheus' promtool, and the Python SMTP server
# the courier's tests use. Skips what is already present.
set -euo pipefail

export PATH="$HOME/.cargo/bin:$PATH"

if ! command -v tansu >/dev/null 2>&1; then
  echo "setup: building tansu from crates.io (about 9 minutes on 2 cores)"
  cargo install tansu --locked --features dynostore,libsql
fi

if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
  echo "setup: installing Debian's prometheus"
  if command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq prometheus >/dev/null
  else
    echo "setup: no apt-get; install prometheus (server and promtool) by hand" >&2
    exit 1
  fi
fi

if ! python3 -c 'import aiosmtpd' >/dev/null 2>&1; then
  echo "setup: installing aiosmtpd (a real SMTP server for the courier's tests)"
  python3 -m pip install --quiet aiosmtpd
fi
