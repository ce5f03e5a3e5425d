#!/usr/bin/env bash
# Set up, then run the whole test suite.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
# pytest exits 5 when nothing was collected (e.g. a filter matched nothing): not a failure.
[ $rc -eq 5 ] && rc=0
exit $rc
