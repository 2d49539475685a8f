#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it (.ci/run calls this and nothing
# else). Installs the real peers (Kamailio, SIPp, baresip) when missing, then
# format, lints and every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x tests/install-deps.sh ]; then tests/install-deps.sh; fi
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo build --workspace --bins
cargo test --workspace
