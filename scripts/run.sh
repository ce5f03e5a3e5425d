#!/usr/bin/env bash
# Set up, then run the main job on its embedded default configuration:
# wsd-smbd on 127.0.0.1:4450, a share in the state folder, a generated user and
# password printed at start-up together with the smbclient line that reaches it.
# Extra arguments go to wsd-smbd (e.g. --port 0, --share NAME=PATH, --user NAME:PASS).
# Ctrl-C or SIGTERM drains the connections and exits.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/scripts/setup.sh"
exec "$ROOT/.venv/bin/wsd-smbd" "$@"
