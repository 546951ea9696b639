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
exec .venv/bin/python -m pytest -q -p no:cacheprovider tests "$@"
