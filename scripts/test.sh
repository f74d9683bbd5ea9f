#!/usr/bin/env bash
# The project's test command (README): formatting, lints, the conformance
# cases at 1 and 2 workers, Prometheus rules, and every test of the workspace
# (unit, replay fixtures, property tests, Kafka integration against a real
# tansu broker on 127.0.0.1, the courier's tests).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

bash scripts/setup.sh

echo "== fmt"
cargo fmt --all -- --check
echo "== clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== build"
cargo build --release --workspace --bins
echo "== conformance (../shared/conformance)"
if [ -x ../shared/conformance/run.sh ]; then
  ../shared/conformance/run.sh target/release/tripwire --workers 1
  ../shared/conformance/run.sh target/release/tripwire --workers 2
else
  echo "conformance cases not found at ../shared/conformance (run.sh): the contract cannot be checked" >&2
  exit 1
fi
echo "== prometheus rules"
promtool check rules deploy/prometheus/rules.yml
promtool check config deploy/prometheus/prometheus.yml
(cd deploy/prometheus && promtool test rules rules_test.yml)
echo "== tests"
cargo test --release --workspace
