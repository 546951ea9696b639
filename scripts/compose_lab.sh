#!/usr/bin/env bash
# The compose lab (docker-compose.test.yml) against a dockerd in a lab namespace: see scripts/compose_lab.py.
#   scripts/compose_lab.sh run [--keep] [--json]   build, bring up 3 managers + 2 workers, check, tear down
#   scripts/compose_lab.sh prepare                 only the cached base image tarball, debs, wheels, context
#   scripts/compose_lab.sh down --name LAB         remove what a killed or --keep run left
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || ./scripts/install.sh
exec .venv/bin/python scripts/compose_lab.py "$@"
