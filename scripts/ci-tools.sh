#!/usr/bin/env bash
# Installs the tools the checks beyond `cargo test` need, on a fresh Debian
# machine as root (what CI is): Debian's `prometheus` (for promtool), `tmux`
# (the console smoke run), curl and python3-venv; and schemathesis 4.x from
# PyPI in a virtualenv. Whatever is already there is left as it is.
#
#   scripts/ci-tools.sh        # prints the virtualenv's path on its last line
#
# The virtualenv is $API_CHECKS_VENV, default ~/.cache/strata-api-checks.
set -euo pipefail

venv=${API_CHECKS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/strata-api-checks}

missing=()
command -v promtool >/dev/null || missing+=(prometheus)
command -v tmux >/dev/null || missing+=(tmux)
command -v curl >/dev/null || missing+=(curl ca-certificates)
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3 python3-venv python3-pip)
if [ ${#missing[@]} -gt 0 ]; then
    echo "ci-tools: apt-get install ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! "$venv/bin/schemathesis" --version >/dev/null 2>&1; then
    echo "ci-tools: pip install schemathesis into $venv" >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check 'schemathesis>=4,<5'
fi
promtool --version 2>&1 | head -1 >&2
tmux -V >&2
"$venv/bin/schemathesis" --version >&2
echo "$venv"
