#!/usr/bin/env bash
# Set up, then run the main job on the embedded default configuration.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/scripts/setup.sh"
exec "$ROOT/.venv/bin/wsd-accept" demo "$@"
