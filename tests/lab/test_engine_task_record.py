"""A swarm task's container record (shoal/swarm/executor.py creates it with save=False): kept in memory by the
create, written by its start before runc runs anything, through the real Engine in a lab host's namespace.

The host runs the fake daemon, so the engine of the test is the only one in the namespace.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from shoal.lab import Lab

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]

# Runs inside the host's namespace: an engine over argv[1], busybox loaded, one container created with save
# (argv[3]) or without, whether its record file is there after the create and what it says after the start.
SCRIPT = textwrap.dedent('''
    import asyncio, json, sys
    from pathlib import Path
    from shoal.api import params
    from shoal.engine.engine import Engine, EngineOptions

    async def main():
        root = Path(sys.argv[1])
        engine = Engine(EngineOptions(data_dir=root / "data", exec_root=root / "run", netns_prefix=sys.argv[2]))
        await engine.restore()
        try:
            with open(sys.argv[4], "rb") as tar:
                engine.images.load(tar)
            request = params.parse_container_create({"Image": "busybox", "Cmd": ["sleep", "60"],
                                                     "HostConfig": {"NetworkMode": "none"}})
            record, _ = await engine.create_container("task", request, save=sys.argv[3] == "save")
            path = engine.state.path("containers", record.id)
            after_create = path.exists()
            await engine.start_container(record.id)
            saved = json.loads(path.read_text())
            await engine.remove_container(record.id, force=True)
            print(json.dumps({"after_create": after_create, "after_start": saved["state"],
                              "after_remove": path.exists()}))
        finally:
            await engine.close()

    asyncio.run(main())
''')


def run_engine(made: Lab, tmp_path: Path, save: bool) -> dict[str, object]:
    tar = ROOT / "build" / "images" / "busybox.tar"
    # nsenter --net, not `ip netns exec` (Lab.exec): that one mounts a sysfs of its own, without the cgroup mount
    # runc needs, as a daemon started by the lab (launch_argv) is not.
    out = subprocess.run(["nsenter", f"--net=/run/netns/{made.netns('h1')}", "--", sys.executable, "-c", SCRIPT,
                          str(tmp_path), f"{made.netns('h1')}-", "save" if save else "no-save", str(tar)],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def test_a_create_without_save_leaves_no_record_until_the_start_writes_it(
        lab: Callable[..., Lab], fake_daemon: Callable[..., Path], tmp_path: Path) -> None:
    fake_daemon()
    assert run_engine(lab(1), tmp_path, save=False) == {"after_create": False, "after_start": "running",
                                                        "after_remove": False}


def test_a_create_of_the_api_saves_its_record_at_once(
        lab: Callable[..., Lab], fake_daemon: Callable[..., Path], tmp_path: Path) -> None:
    fake_daemon()
    assert run_engine(lab(1), tmp_path, save=True) == {"after_create": True, "after_start": "running",
                                                       "after_remove": False}
