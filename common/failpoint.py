"""Named crash points for crash-consistency tests: SHOAL_FAILPOINT=NAME makes the process
SIGKILL itself when it reaches hit(NAME), as a power cut or `kill -9` would there.

Unset (always, outside tests) it costs one dictionary lookup. Used by agent.network's
controller, sandbox and bridge modules; lab tests set it in a lab daemon's environment.
"""
from __future__ import annotations

import os
import signal


def hit(name: str) -> None:
    if os.environ.get("SHOAL_FAILPOINT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
