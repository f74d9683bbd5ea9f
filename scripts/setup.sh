#!/usr/bin/env bash
# Installs what the build and tests need and a fresh machine lacks: OpenSSL
# headers and pkg-config (the courier's HTTP and SMTP clients), the tansu
# broker (built from crates.io), and Debian's Prometheus (server and
# promtool). Skips what is already present.
set -euo pipefail

export PATH="$HOME/.cargo/bin:$PATH"

apt_updated=""
apt_install() {
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup: no apt-get; install $* by hand" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  if [ -z "$apt_updated" ]; then
    apt-get update -qq
    apt_updated=1
  fi
  apt-get install -y -qq "$@" >/dev/null
}

if ! command -v pkg-config >/dev/null 2>&1 || ! pkg-config --exists openssl; then
  echo "setup: installing libssl-dev and pkg-config"
  apt_install libssl-dev pkg-config
fi

if ! command -v tansu >/dev/null 2>&1; then
  echo "setup: tansu (the test broker) is not on PATH: building it from crates.io once (9-22 minutes on 2 cores; later runs reuse it)"
  cargo install tansu --locked --features dynostore,libsql
fi

if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
  echo "setup: installing Debian's prometheus"
  apt_install prometheus
fi

