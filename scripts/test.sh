#!/usr/bin/env bash
# The project's test command (README): formatting, lints, the conformance
# cases at 1 and 2 workers, Prometheus rules, and every test of the workspace
# (unit, replay fixtures, property tests, Kafka integration against a real
# tansu broker on 127.0.0.1, the courier's tests).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

# Each phase is announced with "== name" and closed with its duration; a
# summary of every phase's duration ends the run (also when it fails).
phase_name=""
phase_start=$SECONDS
summary=""
phase() {
  if [ -n "$phase_name" ]; then
    local took=$((SECONDS - phase_start))
    echo "== $phase_name: done in ${took} s"
    summary+="$(printf '%-28s %5d s' "$phase_name" "$took")"$'\n'
  fi
  phase_name="$1"
  phase_start=$SECONDS
  if [ -n "$phase_name" ]; then echo "== $phase_name"; fi
}
finish() {
  local rc=$?
  if [ -n "$phase_name" ]; then
    local note=""
    if [ "$rc" -ne 0 ]; then note=" (failed)"; fi
    summary+="$(printf '%-28s %5d s%s' "$phase_name" $((SECONDS - phase_start)) "$note")"$'\n'
  fi
  printf '== phases\n%s== total %d s\n' "$summary" "$SECONDS"
  exit "$rc"
}
trap finish EXIT

phase "setup (tools the tests need)"
bash scripts/setup.sh

phase "fmt"
cargo fmt --all -- --check
phase "clippy"
cargo clippy --workspace --all-targets -- -D warnings
phase "build"
cargo build --release --workspace --bins
phase "conformance"
if [ -x ../shared/conformance/run.sh ]; then
  ../shared/conformance/run.sh target/release/tripwire --workers 1
  ../shared/conformance/run.sh target/release/tripwire --workers 2
else
  echo "conformance cases not found at ../shared/conformance (run.sh): the contract cannot be checked" >&2
  exit 1
fi
phase "prometheus rules"
promtool check rules deploy/prometheus/rules.yml
promtool check config deploy/prometheus/prometheus.yml
(cd deploy/prometheus && promtool test rules rules_test.yml)
phase "tests"
cargo test --release --workspace
phase ""
