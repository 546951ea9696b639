#!/usr/bin/env bash
# Runs every test: installs what is missing, then the Raft simulation (2,000 seeds) and pytest
# (unit tests, then lab tests, which need root and build real namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install.sh
SEEDS=${SHOAL_SIM_SEEDS:-0-1999}
if [ -f manager/raft/sim.py ]; then
  echo "== raft simulation, seeds $SEEDS"
  .venv/bin/python -m manager.raft.sim --seeds "$SEEDS"
fi
echo "== pytest"
# -rs lists every skip with its reason; with CI set, tests/conftest.py fails any skip that is not
# marked optional. Exit code 5 (no tests collected) is a failure too: nothing was tested.
exec .venv/bin/python -m pytest -q -rs -p no:cacheprovider tests "$@"
