"""The daemon raises its own open-files soft limit to the hard limit at start (shoal.daemon)."""
from __future__ import annotations

import subprocess
import sys

PROGRAM = """
import resource
from shoal.daemon import raise_nofile_limit
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
old, new = raise_nofile_limit()
print(old, new, resource.getrlimit(resource.RLIMIT_NOFILE)[0] == resource.getrlimit(resource.RLIMIT_NOFILE)[1])
"""


def test_the_open_files_soft_limit_is_raised_to_the_hard_limit():
    # In a child process: the test runner's own limits stay as they are.
    out = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "64"
    assert int(out[1]) > 64
    assert out[2] == "True"
