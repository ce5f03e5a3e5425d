#!/usr/bin/env bash
# Set-up shared by scripts/run.sh and scripts/test.sh: apt packages (when
# missing and we can install them), a virtual environment in .venv, and the
# project installed into it (editable, with its test extras).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PY=${PYTHON:-python3}

want_apt() {
    local missing=()
    while read -r pkg; do
        pkg=${pkg%%#*}; pkg=$(echo "$pkg" | xargs)
        [ -z "$pkg" ] && continue
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done < "$1"
    if [ ${#missing[@]} -gt 0 ]; then
        local SUDO=""
        if [ "$(id -u)" != 0 ]; then
            if command -v sudo >/dev/null; then SUDO=sudo; else
                echo "setup: missing Debian packages (${missing[*]}) and not root: install them first" >&2
                return 0
            fi
        fi
        echo "setup: installing Debian packages: ${missing[*]}"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

if command -v dpkg-query >/dev/null && command -v apt-get >/dev/null; then
    want_apt scripts/apt-packages.txt
fi

if [ ! -x .venv/bin/python ]; then
    # --system-site-packages lets the venv see Debian's python3-pyverbs where installed.
    "$PY" -m venv --system-site-packages .venv
fi
stamp=.venv/.wsd-installed
hash=$( (cat pyproject.toml setup.py native/*.c native/*.h native/*.py 2>/dev/null || true) | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$hash" ]; then
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null
    .venv/bin/python -m pip install -q -e ".[test]"
    echo "$hash" > "$stamp"
fi
