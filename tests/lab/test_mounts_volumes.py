"""Mounts, volumes and `docker cp` through the stock docker CLI and docker-py against a lab daemon:
binds ro/rw, tmpfs size, named volumes across containers and a daemon restart, in-use refusal,
--mount errors, symlink-escape targets confined, cp both ways and a hostile tar refused.
"""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import tarfile
import uuid
from pathlib import Path

import pytest

from agent.images import busybox as busybox_image
from shoal.client import DaemonError
from tests.docker_client import docker_client
from tests.lab.helpers import inspect_first, running_lab, shoal, wait_until

pytestmark = pytest.mark.lab

DOCKER = docker_client()
assert DOCKER is not None, "no docker client: scripts/install.sh links one from /opt/shoal-docker-ref"


@pytest.fixture(scope="module")
def lab():
    with running_lab(hosts=1) as lab:
        yield lab


@pytest.fixture
def host_dir():
    path = Path(f"/tmp/shoal-mounts-{uuid.uuid4().hex[:10]}")
    path.mkdir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def docker(lab, *args: str, check: bool = True, input: str | None = None):
    return lab.exec("h1", [DOCKER, *args], check=check, timeout=120, **({"input": input} if input else {}))


def api_error(lab, method: str, path: str, body: bytes, content_type: str) -> tuple[int, str]:
    """(status, message) of a request the daemon refuses."""
    with lab.client("h1") as client:
        with pytest.raises(DaemonError) as info:
            client.send(method, path, body=body, headers={"Content-Type": content_type}).read()
    return info.value.status, info.value.message


def run(lab, *args: str) -> str:
    return docker(lab, "run", "--rm", *args).stdout


def test_bind_mount_rw_writes_land_on_the_host(lab, host_dir):
    (host_dir / "in").write_text("from host\n")
    out = run(lab, "-v", f"{host_dir}:/data", "busybox", "sh", "-c", "cat /data/in; echo hi > /data/out")
    assert out == "from host\n"
    assert (host_dir / "out").read_text() == "hi\n"


def test_bind_mount_ro_refuses_writes(lab, host_dir):
    result = docker(lab, "run", "--rm", "-v", f"{host_dir}:/data:ro", "busybox", "sh", "-c",
                    "echo x > /data/f", check=False)
    assert result.returncode == 1
    assert "Read-only file system" in result.stderr
    assert not (host_dir / "f").exists()


def test_bind_of_a_missing_host_path_with_v_creates_the_directory(lab, host_dir):
    missing = host_dir / "made" / "here"
    run(lab, "-v", f"{missing}:/data", "busybox", "true")
    assert missing.is_dir()


def test_mount_bind_of_a_missing_source_is_refused_with_dockers_message(lab, host_dir):
    result = docker(lab, "run", "--rm", "--mount", f"type=bind,source={host_dir}/nope,target=/x", "busybox", "true",
                    check=False)
    assert result.returncode == 125
    assert (f'Error response from daemon: invalid mount config for type "bind": bind source path does not exist: '
            f"{host_dir}/nope") in result.stderr


def test_mount_with_a_relative_target_is_refused_with_dockers_message(lab, host_dir):
    body = {"Image": "busybox", "HostConfig": {"Mounts": [{"Type": "bind", "Source": str(host_dir), "Target": "x"}]}}
    assert api_error(lab, "POST", "/containers/create", json.dumps(body).encode(), "application/json") == (
        400, "invalid mount config for type \"bind\": invalid mount path: 'x' mount path must be absolute")


def test_duplicate_mount_point_is_refused(lab, host_dir):
    result = docker(lab, "create", "-v", f"{host_dir}:/x", "--tmpfs", "/x", "busybox", check=False)
    assert result.returncode == 1
    assert "Error response from daemon: Duplicate mount point: /x" in result.stderr


def test_tmpfs_is_mounted_with_its_size(lab):
    out = run(lab, "--tmpfs", "/scratch:size=2m,mode=1777", "busybox", "sh", "-c",
              "grep ' /scratch ' /proc/mounts; stat -c %a /scratch")
    line, mode = out.splitlines()
    assert re.search(r"^tmpfs /scratch tmpfs rw,nosuid,nodev,noexec,.*size=2048k", line), line
    assert mode == "1777"


def test_mount_type_tmpfs_with_size_appears_in_inspect(lab):
    cid = docker(lab, "create", "--mount", "type=tmpfs,target=/t,tmpfs-size=1048576", "busybox").stdout.strip()
    try:
        mounts = json.loads(docker(lab, "inspect", cid).stdout)[0]["Mounts"]
        assert mounts == [{"Type": "tmpfs", "Source": "", "Destination": "/t", "Mode": "", "RW": True,
                           "Propagation": ""}]
    finally:
        docker(lab, "rm", cid)


def test_named_volume_persists_across_containers_and_is_inspectable(lab):
    docker(lab, "volume", "create", "--label", "k=v", "persist1")
    try:
        run(lab, "-v", "persist1:/data", "busybox", "sh", "-c", "echo kept > /data/f")
        assert run(lab, "-v", "persist1:/data", "busybox", "cat", "/data/f") == "kept\n"
        info = json.loads(docker(lab, "volume", "inspect", "persist1").stdout)[0]
        assert (info["Name"], info["Driver"], info["Labels"], info["Scope"]) == ("persist1", "local", {"k": "v"}, "local")
        assert info["Mountpoint"].endswith("/volumes/persist1/_data")
        assert "persist1" in docker(lab, "volume", "ls", "--format", "{{.Name}}").stdout.split()
    finally:
        docker(lab, "volume", "rm", "persist1", check=False)


def test_new_volume_is_filled_from_the_image_unless_nocopy(lab):
    assert run(lab, "-v", "copied1:/etc", "busybox", "cat", "/etc/passwd").startswith("root:")
    out = docker(lab, "run", "--rm", "-v", "empty1:/etc:nocopy", "busybox", "ls", "-A", "/etc").stdout
    assert set(out.split()) <= {"hosts", "hostname", "resolv.conf"}  # only shoal's own bind mounts
    docker(lab, "volume", "rm", "copied1", "empty1")


def test_volume_in_use_cannot_be_removed(lab):
    cid = docker(lab, "create", "-v", "busy1:/data", "busybox").stdout.strip()
    try:
        result = docker(lab, "volume", "rm", "busy1", check=False)
        assert result.returncode == 1
        assert f"Error response from daemon: remove busy1: volume is in use - [{cid}]" in result.stderr
        assert "busy1" in docker(lab, "volume", "ls", "-q", "-f", "dangling=false").stdout.split()
        assert "busy1" not in docker(lab, "volume", "ls", "-q", "-f", "dangling=true").stdout.split()
        assert docker(lab, "ps", "-a", "-f", f"id={cid}", "--format", "{{.Mounts}}").stdout == "busy1\n"
    finally:
        docker(lab, "rm", cid)
        docker(lab, "volume", "rm", "busy1")


def test_volume_rm_of_a_missing_volume_says_no_such_volume(lab):
    result = docker(lab, "volume", "rm", "never1", check=False)
    assert result.returncode == 1
    assert "Error response from daemon: get never1: no such volume" in result.stderr


def test_anonymous_volume_goes_with_rm_v_and_named_stays(lab):
    cid = docker(lab, "create", "-v", "/anon", "-v", "named1:/named", "busybox").stdout.strip()
    mounts = {m["Destination"]: m for m in json.loads(docker(lab, "inspect", cid).stdout)[0]["Mounts"]}
    anon = mounts["/anon"]["Name"]
    assert re.fullmatch(r"[0-9a-f]{64}", anon)
    assert (mounts["/anon"]["Mode"], mounts["/named"]["Mode"]) == ("", "z")  # as Docker 20.10 shows them
    assert mounts["/named"] == {"Type": "volume", "Name": "named1", "Source": mounts["/named"]["Source"],
                                "Destination": "/named", "Driver": "local", "Mode": "z", "RW": True,
                                "Propagation": ""}
    docker(lab, "rm", "-v", cid)
    names = docker(lab, "volume", "ls", "-q").stdout.split()
    assert anon not in names and "named1" in names
    docker(lab, "volume", "rm", "named1")


def test_volume_prune_removes_unused_anonymous_volumes(lab):
    cid = docker(lab, "create", "-v", "/anon2", "busybox").stdout.strip()
    anon = json.loads(docker(lab, "inspect", cid).stdout)[0]["Mounts"][0]["Name"]
    docker(lab, "rm", cid)
    out = docker(lab, "volume", "prune", "-f").stdout
    assert anon in out
    assert anon not in docker(lab, "volume", "ls", "-q").stdout.split()


def _image_with_volume(lab, tmp_path: Path) -> str:
    """busybox plus /data/seed and `Volumes: {"/data": {}}` in its config, loaded as `volimg`."""
    import hashlib

    layer = io.BytesIO(busybox_image.build_layer(busybox_image.find_busybox()))
    out = io.BytesIO()
    with tarfile.open(fileobj=layer) as base, tarfile.open(fileobj=out, mode="w") as tar:
        for member in base.getmembers():
            tar.addfile(member, base.extractfile(member) if member.isfile() else None)
        seed = tarfile.TarInfo("data/seed")
        seed.size = 5
        tar.addfile(seed, io.BytesIO(b"seed\n"))
    data = out.getvalue()
    sha = lambda b: hashlib.sha256(b).hexdigest()  # noqa: E731
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {
        "Cmd": ["sh"], "Env": ["PATH=/bin"], "Volumes": {"/data": {}}},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + sha(data)]}}).encode()
    manifest = [{"Config": f"{sha(config)}.json", "RepoTags": ["volimg:latest"], "Layers": [f"{sha(data)}/layer.tar"]}]
    saved = io.BytesIO()
    with tarfile.open(fileobj=saved, mode="w") as tar:
        for name, payload in ((f"{sha(config)}.json", config), (f"{sha(data)}/layer.tar", data),
                              ("manifest.json", json.dumps(manifest).encode())):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    path = tmp_path / "volimg.tar"
    path.write_bytes(saved.getvalue())
    docker(lab, "load", "-i", str(path))
    return "volimg"


def test_image_volume_becomes_an_anonymous_volume_filled_from_the_image(lab, tmp_path, host_dir):
    image = _image_with_volume(lab, tmp_path)
    cid = docker(lab, "create", image, "cat", "/data/seed").stdout.strip()
    try:
        mounts = json.loads(docker(lab, "inspect", cid).stdout)[0]["Mounts"]
        assert [(m["Type"], m["Destination"], m["Mode"]) for m in mounts] == [("volume", "/data", "")]
        docker(lab, "start", "-a", cid)
        assert docker(lab, "logs", cid).stdout == "seed\n"
    finally:
        docker(lab, "rm", "-v", cid)
    assert mounts[0]["Name"] not in docker(lab, "volume", "ls", "-q").stdout.split()
    # An explicit mount on the same path wins over the image's volume.
    assert run(lab, "-v", f"{host_dir}:/data", image, "ls", "-A", "/data") == ""


def _symlink_image(lab, tmp_path: Path) -> str:
    """busybox plus /evil -> /etc and /climb -> ../../../../etc, loaded as `evilimg`."""
    layer = io.BytesIO(busybox_image.build_layer(busybox_image.find_busybox()))
    out = io.BytesIO()
    with tarfile.open(fileobj=layer) as base, tarfile.open(fileobj=out, mode="w") as tar:
        for member in base.getmembers():
            tar.addfile(member, base.extractfile(member) if member.isfile() else None)
        for name, target in (("evil", "/etc"), ("climb", "../../../../etc")):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    from tests.lab.test_images_api import docker_save
    path = tmp_path / "evil.tar"
    path.write_bytes(docker_save(out.getvalue(), "evilimg:latest"))
    docker(lab, "load", "-i", str(path))
    return "evilimg"


def test_bind_target_through_image_symlinks_stays_inside_the_container(lab, host_dir, tmp_path):
    image = _symlink_image(lab, tmp_path)
    (host_dir / "marker").write_text("bound\n")
    name = f"shoal-escape-{uuid.uuid4().hex[:8]}"
    for target in (f"/evil/{name}", f"/climb/{name}"):
        out = run(lab, "-v", f"{host_dir}:{target}", image, "/bin/cat", f"/etc/{name}/marker")
        assert out == "bound\n"
        assert not os.path.exists(f"/etc/{name}")  # the host's /etc was never touched


def test_docker_cp_a_file_in_and_out(lab, tmp_path):
    docker(lab, "run", "-d", "--name", "cp1", "busybox", "sleep", "3600")
    try:
        src = tmp_path / "in.txt"
        src.write_text("copied in\n")
        docker(lab, "cp", str(src), "cp1:/tmp/in.txt")
        assert docker(lab, "exec", "cp1", "cat", "/tmp/in.txt").stdout == "copied in\n"
        docker(lab, "exec", "cp1", "sh", "-c", "mkdir -p /d/sub && echo deep > /d/sub/f")
        docker(lab, "cp", "cp1:/d", str(tmp_path / "out"))
        assert (tmp_path / "out" / "sub" / "f").read_text() == "deep\n"
        docker(lab, "cp", "cp1:/etc/passwd", str(tmp_path / "passwd"))
        assert (tmp_path / "passwd").read_text().startswith("root:")
    finally:
        docker(lab, "rm", "-f", "cp1")


def test_docker_cp_out_of_a_stopped_container(lab, tmp_path):
    docker(lab, "run", "--name", "cp2", "busybox", "sh", "-c", "echo done > /result")
    try:
        docker(lab, "cp", "cp2:/result", str(tmp_path / "result"))
        assert (tmp_path / "result").read_text() == "done\n"
    finally:
        docker(lab, "rm", "cp2")


def test_docker_cp_of_a_missing_path_says_could_not_find(lab, tmp_path):
    docker(lab, "run", "-d", "--name", "cp3", "busybox", "sleep", "3600")
    try:
        result = docker(lab, "cp", "cp3:/nope", str(tmp_path / "x"), check=False)
        assert result.returncode == 1
        assert "Could not find the file /nope in container cp3" in result.stderr
    finally:
        docker(lab, "rm", "-f", "cp3")


def test_hostile_tar_is_refused_and_writes_nothing_outside(lab):
    docker(lab, "run", "-d", "--name", "cp4", "busybox", "sleep", "3600")
    marker = f"shoal-hostile-{uuid.uuid4().hex[:8]}"
    try:
        for members in (
            [(f"../../../../tmp/{marker}", tarfile.REGTYPE, "")],
            [(f"/tmp/{marker}", tarfile.REGTYPE, "")],
            [("l", tarfile.SYMTYPE, "/tmp"), (f"l/{marker}", tarfile.REGTYPE, "")],
        ):
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w") as tar:
                for name, kind, link in members:
                    info = tarfile.TarInfo(name)
                    info.type, info.linkname = kind, link
                    data = b"pwned" if kind == tarfile.REGTYPE else b""
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data) if data else None)
            status, message = api_error(lab, "PUT", "/containers/cp4/archive?path=/", buf.getvalue(),
                                        "application/x-tar")
            assert (status, message.startswith("invalid tar member")) == (400, True), message
        assert not os.path.exists(f"/tmp/{marker}")
        listing = docker(lab, "exec", "cp4", "ls", "-A", "/tmp").stdout.split()
        assert marker not in listing and "l" not in docker(lab, "exec", "cp4", "ls", "/").stdout.split()
    finally:
        docker(lab, "rm", "-f", "cp4")


def test_cp_into_a_container_symlink_to_the_host_stays_inside(lab, tmp_path):
    docker(lab, "run", "-d", "--name", "cp5", "busybox", "sh", "-c", "ln -s /etc /escape; sleep 3600")
    marker = f"shoal-cp-{uuid.uuid4().hex[:8]}"
    try:
        wait_until(lambda: docker(lab, "exec", "cp5", "test", "-L", "/escape", check=False).returncode == 0)
        src = tmp_path / marker
        src.write_text("inside\n")
        docker(lab, "cp", str(src), f"cp5:/escape/{marker}")
        assert docker(lab, "exec", "cp5", "cat", f"/etc/{marker}").stdout == "inside\n"
        assert not os.path.exists(f"/etc/{marker}")
    finally:
        docker(lab, "rm", "-f", "cp5")


def test_docker_py_volumes_and_run_with_volumes(lab, host_dir):
    import docker as docker_py

    client = docker_py.DockerClient(base_url=f"unix://{lab.socket('h1')}", version="auto")
    try:
        volume = client.volumes.create("pyvol1", labels={"a": "b"})
        assert client.volumes.get("pyvol1").attrs["Labels"] == {"a": "b"}
        assert "pyvol1" in [v.name for v in client.volumes.list()]
        out = client.containers.run("busybox", ["sh", "-c", "echo py > /v/f; cat /h/in"], remove=True,
                                    volumes={"pyvol1": {"bind": "/v", "mode": "rw"},
                                             str(host_dir): {"bind": "/h", "mode": "ro"}}) \
            if (host_dir / "in").write_text("host\n") else None
        assert out == b"host\n"
        volume.remove()
        assert "pyvol1" not in [v.name for v in client.volumes.list()]
    finally:
        client.close()


def test_daemon_restart_keeps_volumes_and_running_mounts(lab, host_dir):
    docker(lab, "volume", "create", "keep1")
    docker(lab, "run", "-d", "--name", "mnt1", "-v", "keep1:/v", "-v", f"{host_dir}:/h", "busybox",
           "sh", "-c", "echo before > /v/f; sleep 3600")
    try:
        wait_until(lambda: docker(lab, "exec", "mnt1", "cat", "/v/f", check=False).stdout == "before\n")
        lab.restart_daemon("h1", kill9=True)
        assert "keep1" in docker(lab, "volume", "ls", "-q").stdout.split()
        docker(lab, "exec", "mnt1", "sh", "-c", "echo after > /h/g")
        assert (host_dir / "g").read_text() == "after\n"
        mounts = json.loads(docker(lab, "inspect", "mnt1").stdout)[0]["Mounts"]
        assert sorted(m["Destination"] for m in mounts) == ["/h", "/v"]
        result = docker(lab, "volume", "rm", "keep1", check=False)
        assert "volume is in use" in result.stderr
    finally:
        docker(lab, "rm", "-f", "mnt1")
        docker(lab, "volume", "rm", "keep1", check=False)


def test_shoal_volume_create_ls_inspect_rm_print_what_docker_prints(lab):
    assert shoal(lab, "volume", "create", "--label", "x=y", "shvol1").stdout == "shvol1\n"
    listing = shoal(lab, "volume", "ls").stdout.splitlines()
    assert listing[0] == "DRIVER    VOLUME NAME"
    assert "local     shvol1" in listing
    assert inspect_first(lab, "volume", "inspect", "shvol1")["Labels"] == {"x": "y"}
    assert shoal(lab, "volume", "rm", "shvol1").stdout == "shvol1\n"
    gone = shoal(lab, "volume", "rm", "shvol1", check=False)
    assert (gone.returncode, gone.stderr) == (1, "Error response from daemon: get shvol1: no such volume\n")


def test_shoal_cp_copies_a_file_in_and_a_directory_out(lab, tmp_path):
    docker(lab, "run", "-d", "--name", "shcp1", "busybox", "sh", "-c", "mkdir -p /d/s; echo x > /d/s/f; sleep 3600")
    try:
        wait_until(lambda: docker(lab, "exec", "shcp1", "test", "-f", "/d/s/f", check=False).returncode == 0)
        (tmp_path / "in").write_text("shoal in\n")
        shoal(lab, "cp", str(tmp_path / "in"), "shcp1:/tmp/")
        assert docker(lab, "exec", "shcp1", "cat", "/tmp/in").stdout == "shoal in\n"
        shoal(lab, "cp", "shcp1:/d", str(tmp_path / "out"))
        assert (tmp_path / "out" / "s" / "f").read_text() == "x\n"
    finally:
        docker(lab, "rm", "-f", "shcp1")


def test_run_rm_removes_the_anonymous_volume(lab):
    before = set(docker(lab, "volume", "ls", "-q").stdout.split())
    docker(lab, "run", "--rm", "-v", "/scratch", "busybox", "true")
    wait_until(lambda: set(docker(lab, "volume", "ls", "-q").stdout.split()) == before)


def test_bind_driver_options_make_a_volume_of_a_host_directory(lab, host_dir):
    docker(lab, "volume", "create", "-o", "type=none", "-o", "o=bind", "-o", f"device={host_dir}", "bindvol1")
    try:
        run(lab, "-v", "bindvol1:/v", "busybox", "sh", "-c", "echo via-volume > /v/f")
        assert (host_dir / "f").read_text() == "via-volume\n"
        tmpfs = docker(lab, "volume", "create", "-o", "type=tmpfs", "-o", "device=tmpfs", "tmpvol1", check=False)
        assert tmpfs.returncode == 1
        assert ("shoal's local volume driver supports only bind options (type=none, o=bind, device=/path); "
                "got device=tmpfs,type=tmpfs") in tmpfs.stderr
    finally:
        docker(lab, "volume", "rm", "bindvol1")


def test_cp_into_a_stopped_container_lands_in_its_volume_and_after_a_run_in_its_own_files(lab, tmp_path):
    docker(lab, "create", "--name", "cp6", "-v", "cpvol1:/data", "busybox", "sh", "-c", "cat /data/in /tmp/in 2>&1")
    try:
        (tmp_path / "in").write_text("into the volume\n")
        docker(lab, "cp", str(tmp_path / "in"), "cp6:/data/in")
        refused = docker(lab, "cp", str(tmp_path / "in"), "cp6:/tmp/in", check=False)
        assert refused.returncode == 1
        assert "has never been started: shoal makes its writable layer at its first start" in refused.stderr
        assert docker(lab, "start", "-a", "cp6", check=False).returncode == 1  # no /tmp/in yet
        (tmp_path / "in").write_text("into its files\n")
        docker(lab, "cp", str(tmp_path / "in"), "cp6:/tmp/in")
        docker(lab, "start", "-a", "cp6")
        assert docker(lab, "logs", "cp6").stdout == (
            "into the volume\ncat: can't open '/tmp/in': No such file or directory\n"
            "into the volume\ninto its files\n")
    finally:
        docker(lab, "rm", "-v", "cp6")
        docker(lab, "volume", "rm", "cpvol1")


def test_a_restarted_container_keeps_the_files_it_wrote(lab):
    docker(lab, "create", "--name", "keep1", "busybox", "sh", "-c", "echo run >> /runs; wc -l < /runs")
    try:
        for _ in range(3):
            docker(lab, "start", "-a", "keep1")
        assert docker(lab, "logs", "keep1").stdout.split() == ["1", "2", "3"]
    finally:
        docker(lab, "rm", "keep1")


def test_cp_out_of_a_large_file_streams_it_whole(lab, tmp_path):
    docker(lab, "run", "-d", "--name", "cp7", "busybox", "sh", "-c",
           "dd if=/dev/urandom of=/big bs=1M count=24 2>/dev/null; md5sum /big > /big.md5; sleep 3600")
    try:
        wait_until(lambda: docker(lab, "exec", "cp7", "test", "-s", "/big.md5", check=False).returncode == 0, 30)
        docker(lab, "cp", "cp7:/big", str(tmp_path / "big"))
        import hashlib
        want = docker(lab, "exec", "cp7", "cat", "/big.md5").stdout.split()[0]
        assert hashlib.md5((tmp_path / "big").read_bytes()).hexdigest() == want
    finally:
        docker(lab, "rm", "-f", "cp7")


def test_cp_of_the_whole_root_of_a_running_container_leaves_proc_and_sys_empty(lab, tmp_path):
    docker(lab, "run", "-d", "--name", "cp8", "busybox", "sleep", "3600")
    try:
        out = tmp_path / "root"
        docker(lab, "cp", "cp8:/", str(out))
        assert (out / "bin" / "busybox").is_file()
        assert list((out / "proc").iterdir()) == [] and list((out / "sys").iterdir()) == []
        refused = docker(lab, "cp", "cp8:/proc/1/status", str(tmp_path / "status"), check=False)
        assert refused.returncode == 1
        assert "/proc/1/status in container cp8 is on a kernel file system (proc, sysfs)" in refused.stderr
    finally:
        docker(lab, "rm", "-f", "cp8")
