"""rename, container/image/system prune, system df and wait conditions through the stock docker
CLI and docker-py against a lab daemon: Docker's outputs and messages.
"""
from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import pytest

from tests.docker_client import docker_client
from tests.lab.helpers import running_lab, wait_until
from tests.lab.test_images_api import docker_save, tar_of

pytestmark = pytest.mark.lab

DOCKER = docker_client()
assert DOCKER is not None, "no docker client: scripts/install.sh links one from /opt/shoal-docker-ref"


@pytest.fixture(scope="module")
def lab():
    with running_lab(hosts=1) as lab:
        yield lab


def docker(lab, *args: str, check: bool = True):
    return lab.exec("h1", [DOCKER, *args], check=check, timeout=120)


def _inspect(lab, name: str) -> dict:
    return json.loads(docker(lab, "inspect", name).stdout)[0]


def _py(lab):
    import docker as docker_py

    return docker_py.DockerClient(base_url=f"unix://{lab.socket('h1')}", version="auto")


# ---- rename -------------------------------------------------------------------------

def test_rename_changes_the_name_and_emits_the_old_one(lab):
    cid = docker(lab, "create", "--name", "rnold", "busybox", "true").stdout.strip()
    docker(lab, "rename", "rnold", "rnnew")
    assert _inspect(lab, cid)["Name"] == "/rnnew"
    events = docker(lab, "events", "--since", "0", "--until", f"{time.time():.9f}", "--filter", "event=rename",
                    "--filter", f"container={cid}", "--format", "{{json .Actor.Attributes}}").stdout
    assert json.loads(events) == {"image": "busybox", "name": "rnnew", "oldName": "/rnold"}
    docker(lab, "rm", "rnnew")


def test_rename_to_the_same_name_is_refused(lab):
    docker(lab, "create", "--name", "rnsame", "busybox", "true")
    result = docker(lab, "rename", "rnsame", "rnsame", check=False)
    assert result.returncode == 1
    assert result.stderr == (
        "Error response from daemon: Renaming a container with the same name as its current name\n"
        "Error: failed to rename container named rnsame\n")
    docker(lab, "rm", "rnsame")


def test_rename_to_a_taken_name_is_dockers_conflict(lab):
    docker(lab, "create", "--name", "rna", "busybox", "true")
    other = docker(lab, "create", "--name", "rnb", "busybox", "true").stdout.strip()
    result = docker(lab, "rename", "rna", "rnb", check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f'Error response from daemon: Error when allocating new name: Conflict. The container name "/rnb" is '
        f'already in use by container '
        f'"{other}". You have to remove (or rename) that container to be able to reuse that name.\n'
        "Error: failed to rename container named rna")
    assert _inspect(lab, "rna")["Name"] == "/rna"
    docker(lab, "rm", "rna", "rnb")


def test_rename_to_an_invalid_name_is_refused_naming_it(lab):
    docker(lab, "create", "--name", "rnbad", "busybox", "true")
    result = docker(lab, "rename", "rnbad", "no/slash", check=False)
    assert result.stderr.strip() == (
        "Error response from daemon: Error when allocating new name: Invalid container name (/no/slash), "
        "only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed\n"
        "Error: failed to rename container named rnbad")
    docker(lab, "rm", "rnbad")


def test_rename_moves_the_dns_name_on_a_user_network(lab):
    docker(lab, "network", "create", "rnnet")
    try:
        docker(lab, "run", "-d", "--name", "rndns", "--network", "rnnet", "busybox", "sleep", "3600")
        docker(lab, "run", "-d", "--name", "rnasker", "--network", "rnnet", "busybox", "sleep", "3600")
        ip = _inspect(lab, "rndns")["NetworkSettings"]["Networks"]["rnnet"]["IPAddress"]
        docker(lab, "rename", "rndns", "rndns2")
        found = docker(lab, "exec", "rnasker", "nslookup", "rndns2", check=False)
        assert found.returncode == 0 and f"Address: {ip}" in found.stdout
        gone = docker(lab, "exec", "rnasker", "nslookup", "rndns", check=False)
        assert gone.returncode != 0
    finally:
        docker(lab, "rm", "-f", "rndns2", "rndns", "rnasker", check=False)
        docker(lab, "network", "rm", "rnnet")


def test_rename_rewrites_the_hosts_file_of_a_container_linking_to_it(lab):
    docker(lab, "run", "-d", "--name", "rnlinked", "busybox", "sleep", "3600")
    docker(lab, "run", "-d", "--name", "rnlinker", "--link", "rnlinked:al", "busybox", "sleep", "3600")
    try:
        ip = _inspect(lab, "rnlinked")["NetworkSettings"]["IPAddress"]
        cid = _inspect(lab, "rnlinked")["Id"]
        docker(lab, "rename", "rnlinked", "rnlinked2")
        hosts = docker(lab, "exec", "rnlinker", "cat", "/etc/hosts").stdout
        assert f"{ip}\tal {cid[:12]} rnlinked2" in hosts
    finally:
        docker(lab, "rm", "-f", "rnlinker", "rnlinked2", "rnlinked", check=False)


# ---- prune --------------------------------------------------------------------------

def test_container_prune_removes_stopped_containers_only(lab):
    a = docker(lab, "create", "--name", "pra", "busybox", "true").stdout.strip()
    docker(lab, "run", "--name", "prb", "busybox", "true")
    b = _inspect(lab, "prb")["Id"]
    docker(lab, "run", "-d", "--name", "prrun", "busybox", "sleep", "3600")
    out = docker(lab, "container", "prune", "-f").stdout
    lines = out.splitlines()
    assert lines[0] == "Deleted Containers:"
    assert sorted(lines[1:3]) == sorted([a, b])
    assert re.fullmatch(r"Total reclaimed space: \d+(\.\d+)?[kMG]?B", lines[-1])
    assert docker(lab, "ps", "-a", "--format", "{{.Names}}").stdout.split() == ["prrun"]
    docker(lab, "rm", "-f", "prrun")


def test_container_prune_with_a_label_filter(lab):
    keep = docker(lab, "create", "--name", "prkeep", "busybox", "true").stdout.strip()
    drop = docker(lab, "create", "--name", "prdrop", "-l", "gone=yes", "busybox", "true").stdout.strip()
    out = docker(lab, "container", "prune", "-f", "--filter", "label=gone=yes").stdout
    assert out.splitlines()[:2] == ["Deleted Containers:", drop]
    assert _inspect(lab, "prkeep")["Id"] == keep
    docker(lab, "rm", "prkeep")


def test_container_prune_with_nothing_to_do(lab):
    assert docker(lab, "container", "prune", "-f").stdout == "Total reclaimed space: 0B\n"


def test_image_prune_removes_dangling_images_and_keeps_used_ones(lab, tmp_path: Path):
    first = tmp_path / "one.tar"
    first.write_bytes(docker_save(tar_of({"etc/one": b"1"}), "prunable:1"))
    second = tmp_path / "two.tar"
    second.write_bytes(docker_save(tar_of({"etc/two": b"2"}), "prunable:1"))
    docker(lab, "load", "-i", str(first))
    old_id = docker(lab, "image", "inspect", "--format", "{{.Id}}", "prunable:1").stdout.strip()
    docker(lab, "load", "-i", str(second))  # takes the tag: the first becomes dangling
    new_id = docker(lab, "image", "inspect", "--format", "{{.Id}}", "prunable:1").stdout.strip()
    assert old_id != new_id
    out = docker(lab, "image", "prune", "-f").stdout.splitlines()
    assert out[:2] == ["Deleted Images:", f"deleted: {old_id}"]
    assert re.fullmatch(r"Total reclaimed space: \d+(\.\d+)?[kMG]?B", out[-1])
    images = docker(lab, "images", "-q", "--no-trunc").stdout.split()
    assert old_id not in images and new_id in images
    docker(lab, "rmi", "prunable:1")


def test_image_prune_all_keeps_images_containers_use(lab):
    docker(lab, "create", "--name", "prused", "busybox", "true")
    before = sorted(docker(lab, "images", "-q", "--no-trunc").stdout.split())
    busybox = docker(lab, "image", "inspect", "--format", "{{.Id}}", "busybox").stdout.strip()
    docker(lab, "image", "prune", "-a", "-f")
    after = docker(lab, "images", "-q", "--no-trunc").stdout.split()
    assert busybox in after and set(after) <= set(before)
    docker(lab, "rm", "prused")


def test_system_prune_removes_stopped_containers_and_unused_networks(lab):
    cid = docker(lab, "create", "--name", "spc", "busybox", "true").stdout.strip()
    docker(lab, "network", "create", "spnet")
    out = docker(lab, "system", "prune", "-f").stdout
    assert f"Deleted Containers:\n{cid}\n" in out
    assert "Deleted Networks:\nspnet\n" in out
    assert out.splitlines()[-1].startswith("Total reclaimed space: ")
    assert cid[:12] not in docker(lab, "ps", "-aq").stdout.split()
    assert "spnet" not in docker(lab, "network", "ls", "--format", "{{.Name}}").stdout.split()


# ---- system df ----------------------------------------------------------------------

def test_system_df_counts_images_and_containers(lab):
    docker(lab, "run", "-d", "--name", "dfrun", "busybox", "sh", "-c", "echo x > /big; sleep 3600")
    docker(lab, "create", "--name", "dfidle", "busybox", "true")
    rows = {r["Type"]: r for r in map(json.loads, docker(lab, "system", "df", "--format", "{{json .}}").stdout.splitlines())}
    images = len(docker(lab, "images", "-q").stdout.split())
    total, running = (len(docker(lab, "ps", *flags).stdout.split()) for flags in (["-aq"], ["-q"]))
    assert (rows["Images"]["TotalCount"], rows["Images"]["Active"]) == (str(images), "1")
    assert (rows["Containers"]["TotalCount"], rows["Containers"]["Active"]) == (str(total), str(running))
    assert total >= 2 and running >= 1
    assert rows["Local Volumes"]["TotalCount"] == "0"
    verbose = docker(lab, "system", "df", "-v").stdout
    assert re.search(r"^[0-9a-f]{12}\s+busybox\s+.*dfrun$", verbose, re.M)
    docker(lab, "rm", "-f", "dfrun", "dfidle")


def test_system_df_through_docker_py(lab):
    client = _py(lab)
    try:
        df = client.df()
        assert set(df) >= {"LayersSize", "Images", "Containers", "Volumes", "BuildCache"}
        assert df["LayersSize"] == sum(i["Size"] for i in df["Images"])
    finally:
        client.close()


# ---- wait conditions ----------------------------------------------------------------

def test_wait_next_exit_waits_for_the_next_exit_of_a_stopped_container(lab):
    client = _py(lab)
    try:
        container = client.containers.create("busybox", ["sh", "-c", "exit 7"], name="wnext")
        result: dict = {}
        waiter = threading.Thread(target=lambda: result.update(container.wait(condition="next-exit", timeout=30)))
        waiter.start()
        container.start()
        waiter.join(30)
        assert result == {"StatusCode": 7, "Error": None}
        container.remove()
    finally:
        client.close()


def test_wait_removed_returns_when_the_container_is_removed(lab):
    client = _py(lab)
    try:
        container = client.containers.run("busybox", ["sh", "-c", "exit 2"], name="wrm", detach=True)
        wait_until(lambda: (container.reload(), container.status)[1] == "exited")
        result: dict = {}
        waiter = threading.Thread(target=lambda: result.update(container.wait(condition="removed", timeout=30)))
        waiter.start()
        assert result == {}
        container.remove()
        waiter.join(30)
        assert result == {"StatusCode": 2, "Error": None}
    finally:
        client.close()


def test_wait_with_an_unknown_condition_is_refused(lab):
    import docker as docker_py

    client = _py(lab)
    try:
        container = client.containers.create("busybox", ["true"], name="wbad")
        with pytest.raises(docker_py.errors.APIError) as info:
            container.wait(condition="bogus")
        assert (info.value.status_code, info.value.explanation) == (400, 'invalid condition: "bogus"')
        container.remove()
    finally:
        client.close()


def test_docker_wait_prints_the_exit_code(lab):
    docker(lab, "run", "-d", "--name", "wcli", "busybox", "sh", "-c", "sleep 0.3; exit 5")
    assert docker(lab, "wait", "wcli").stdout == "5\n"
    docker(lab, "rm", "wcli")
