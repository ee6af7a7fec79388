#!/usr/bin/env bash
# API checks against a live daemon (issue 12):
#  - schemathesis fuzzes every operation of GET /openapi.json with the checks
#    not_a_server_error, response_schema_conformance and status_code_conformance;
#  - promtool checks the text of GET /metrics.
# Starts `stratad --demo` on a free loopback port with a temporary directory
# and a token, runs both, stops the daemon, and fails on any finding.
# The tools (promtool, schemathesis in a virtualenv) come from
# scripts/ci-tools.sh, which installs what is missing.
#
# Knobs: API_CHECKS_MAX_EXAMPLES (default 25 per operation),
# API_CHECKS_MAX_TIME (seconds of fuzzing, default 150), API_CHECKS_SEED.
set -euo pipefail
cd "$(dirname "$0")/.."

max_examples=${API_CHECKS_MAX_EXAMPLES:-25}
max_time=${API_CHECKS_MAX_TIME:-150}
seed=${API_CHECKS_SEED:-1}

echo "== api-checks: tools (scripts/ci-tools.sh)"
venv=$(scripts/ci-tools.sh)

echo "== api-checks: build stratad"
cargo build -p strata-daemon --bin stratad --locked
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
stratad="$target_dir/debug/stratad"

work=$(mktemp -d)
daemon_pid=
cleanup() {
    if [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2>/dev/null; then
        kill "$daemon_pid"
        wait "$daemon_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
token=$(python3 -c 'import secrets; print(secrets.token_hex(16))')

echo "== api-checks: stratad --demo on $base"
STRATA_TOKEN=$token RUST_LOG=warn "$stratad" --demo --listen "127.0.0.1:$port" \
    --strategies-dir "$work/strategies" --data-dir "$work/data" >"$work/stratad.log" 2>&1 &
daemon_pid=$!
for _ in $(seq 1 300); do
    if curl -fsS "$base/healthz" 2>/dev/null | grep -q '"status":"ok"'; then
        break
    fi
    kill -0 "$daemon_pid" 2>/dev/null || { cat "$work/stratad.log"; echo "stratad exited"; exit 1; }
    sleep 0.1
done
curl -fsS "$base/healthz" | grep -q '"status":"ok"' || { cat "$work/stratad.log"; echo "stratad not ready"; exit 1; }

failed=0

echo "== api-checks: promtool check metrics ($base/metrics)"
curl -fsS "$base/metrics" >"$work/metrics.txt"
if ! promtool check metrics <"$work/metrics.txt"; then
    echo "promtool check metrics: FAILED"
    failed=1
fi

echo "== api-checks: schemathesis ($max_examples examples per operation, at most ${max_time}s)"
# Run from the temporary directory: schemathesis keeps a cache in the
# working directory, which must not land in the repository. One worker:
# with two threads, CPython 3.11's ast.parse (which hypothesis calls to
# describe lambdas) can fail with "AST constructor recursion depth mismatch",
# an error of the tool, not of the daemon.
if ! (cd "$work" && timeout --kill-after=30 $((max_time + 120)) "$venv/bin/schemathesis" --no-color run "$base/openapi.json" \
    --url "$base" \
    --header "Authorization: Bearer $token" \
    --checks not_a_server_error,response_schema_conformance,status_code_conformance \
    --phases examples,coverage,fuzzing \
    --max-examples "$max_examples" \
    --max-time "$max_time" \
    --seed "$seed" \
    --request-timeout 10 \
    --workers 1 \
    --suppress-health-check all \
    --generation-database none); then
    echo "schemathesis: FAILED"
    failed=1
fi

if ! kill -0 "$daemon_pid" 2>/dev/null; then
    echo "stratad died during the checks:"
    cat "$work/stratad.log"
    failed=1
fi
if grep -q "panicked" "$work/stratad.log"; then
    echo "stratad panicked during the checks:"
    cat "$work/stratad.log"
    failed=1
fi

if [ "$failed" -ne 0 ]; then
    echo "api-checks: FAILED"
    exit 1
fi
echo "api-checks: passed"
