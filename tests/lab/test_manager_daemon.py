"""`shoal daemon --manager-config FILE` runs a manager (manager/node.py) beside the engine: a one-host lab
whose daemon serves the control API on the host's lab address; a client in that namespace creates a config."""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

from shoal.lab import Lab, data_dir, host_address

CLIENT = textwrap.dedent('''
    import sys, time, grpc
    from proto import control_pb2, control_pb2_grpc, objects_pb2
    with grpc.insecure_channel(sys.argv[1]) as ch:
        stub = control_pb2_grpc.ControlStub(ch)
        deadline = time.monotonic() + 30
        while True:
            try:
                st = stub.Status(control_pb2.StatusRequest(), timeout=2)
                if st.role == "leader":
                    break
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                sys.exit("no leader")
            time.sleep(0.05)
        spec = objects_pb2.ConfigSpec(annotations=objects_pb2.Annotations(name="from-the-daemon"), data=b"x")
        stub.CreateConfig(control_pb2.CreateConfigRequest(spec=spec), timeout=30)
        names = [c.spec.annotations.name for c in stub.ListConfigs(control_pb2.ListConfigsRequest(), timeout=30).configs]
        print(st.node_id, st.role, names)
''')


def test_shoal_daemon_with_a_manager_config_serves_the_control_api(lab: Callable[..., Lab], tmp_path: Path) -> None:
    addr = f"{host_address('h1')}:4242"
    config = tmp_path / "manager.json"
    config.write_text(json.dumps({"id": 1, "listen": addr, "peers": {"1": addr}}))
    lb = lab(hosts=1, daemon_args=["--manager-config", str(config)])
    out = lb.exec("h1", [sys.executable, "-c", CLIENT, addr], timeout=60)
    assert out.stdout.strip() == "1 leader ['from-the-daemon']"
    assert (data_dir(lb.name, "h1") / "manager" / "members.json").exists()
