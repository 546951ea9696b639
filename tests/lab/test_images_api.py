"""The stock docker CLI and docker-py against a lab daemon's image API under bad input: a gzip
bomb and a truncated tarball refused with their message and nothing left on disk, and
`docker rmi` / `docker image rm -f` with Docker's answers and refusals.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from shoal.lab import data_dir
from tests.docker_client import docker_client
from tests.lab.helpers import running_lab, shoal, wait_until

pytestmark = pytest.mark.lab

DOCKER = docker_client()
assert DOCKER is not None, "no docker client: scripts/install.sh links one from /opt/shoal-docker-ref"
LIMIT = 4 << 20  # --max-image-size of the lab daemon: above busybox (2 MiB), far below a bomb


@pytest.fixture(scope="module")
def lab():
    with running_lab(hosts=1, daemon_args=["--max-image-size", "4m"]) as lab:
        yield lab


def docker(lab, *args: str, check: bool = True):
    return lab.exec("h1", [DOCKER, *args], check=check, timeout=120)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tar_of(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def docker_save(layer: bytes, tag: str, plain: bytes | None = None) -> bytes:
    """A one-layer `docker save` tarball; `plain` is the layer uncompressed when `layer` is gzip."""
    config = json.dumps({
        "architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
        "config": {"Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + sha(plain or layer)]},
    }).encode()
    layer_name = f"{sha(layer)}/layer.tar"
    manifest = [{"Config": f"{sha(config)}.json", "RepoTags": [tag], "Layers": [layer_name]}]
    return tar_of({f"{sha(config)}.json": config, layer_name: layer, "manifest.json": json.dumps(manifest).encode()})


def image_ids(lab) -> list[str]:
    return sorted(set(docker(lab, "images", "-q", "--no-trunc").stdout.split()))


def image_files(lab) -> list[str]:
    """What the daemon keeps on disk for images: image dirs and temp dirs of loads."""
    root = data_dir(lab.name, "h1") / "images"
    return sorted(f"sha256/{p.name}" for p in (root / "sha256").iterdir()) + \
        sorted(f"tmp/{p.name}" for p in (root / "tmp").iterdir())


def test_docker_load_of_a_gzip_bomb_is_refused_naming_the_limit(lab, tmp_path: Path):
    plain = tar_of({"zeros": bytes(64 << 20)})
    bomb = gzip.compress(plain, 9)
    path = tmp_path / "bomb.tar"
    path.write_bytes(docker_save(bomb, "bomb:1", plain))
    assert path.stat().st_size < 200_000
    before_ids, before_files = image_ids(lab), image_files(lab)
    result = docker(lab, "load", "-i", str(path), check=False)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        f"Error response from daemon: layer 1 ({sha(bomb)}/layer.tar): the image expands beyond the daemon's "
        f"--max-image-size of {LIMIT} bytes\n"
    )
    assert (image_ids(lab), image_files(lab)) == (before_ids, before_files)


def test_docker_load_of_a_tarball_larger_than_the_limit_is_refused(lab, tmp_path: Path):
    big = tar_of({"random": os.urandom(LIMIT + (64 << 10))})
    path = tmp_path / "big.tar"
    path.write_bytes(docker_save(big, "big:1"))
    before_ids, before_files = image_ids(lab), image_files(lab)
    result = docker(lab, "load", "-i", str(path), check=False)
    assert (result.returncode, result.stderr) == (1, (
        f"Error response from daemon: invalid tar: the image tarball is larger than the daemon's "
        f"--max-image-size of {LIMIT} bytes\n"
    ))
    assert (image_ids(lab), image_files(lab)) == (before_ids, before_files)


def test_docker_load_of_a_truncated_tarball_says_unexpected_eof(lab, tmp_path: Path):
    layer = tar_of({"etc/data": os.urandom(100_000)})
    whole = docker_save(layer, "cut:1")
    path = tmp_path / "cut.tar"
    path.write_bytes(whole[:60_000])
    before_ids, before_files = image_ids(lab), image_files(lab)
    result = docker(lab, "load", "-i", str(path), check=False)
    assert (result.returncode, result.stderr) == (1, (
        f"Error response from daemon: invalid tar: unexpected EOF: the archive ends inside "
        f"'{sha(layer)}/layer.tar'\n"
    ))
    assert (image_ids(lab), image_files(lab)) == (before_ids, before_files)


def test_docker_load_of_a_manifest_that_is_an_object_names_the_problem(lab, tmp_path: Path):
    path = tmp_path / "obj.tar"
    path.write_bytes(tar_of({"manifest.json": b"{}"}))
    result = docker(lab, "load", "-i", str(path), check=False)
    assert (result.returncode, result.stderr) == (
        1, "Error response from daemon: invalid tar: manifest.json must be a JSON array of images, not object\n"
    )


def test_docker_rmi_deletes_an_unused_image_and_its_files(lab, tmp_path: Path):
    layer = tar_of({"etc/hello": b"hi"})
    path = tmp_path / "small.tar"
    path.write_bytes(docker_save(layer, "small:1"))
    assert docker(lab, "load", "-i", str(path)).stdout == "Loaded image: small:1\n"
    image_id = docker(lab, "image", "inspect", "--format", "{{.Id}}", "small:1").stdout.strip()
    assert f"sha256/{image_id[7:]}" in image_files(lab)
    assert docker(lab, "rmi", "small:1").stdout == (
        f"Untagged: small:1\nDeleted: {image_id}\nDeleted: sha256:{sha(layer)}\n"
    )
    assert image_id not in image_ids(lab)
    assert not any(image_id[7:] in f for f in image_files(lab))


def test_docker_rmi_of_a_missing_image_is_no_such_image(lab):
    result = docker(lab, "rmi", "nope", check=False)
    assert (result.returncode, result.stderr) == (1, "Error response from daemon: No such image: nope:latest\n")


def test_docker_rmi_of_an_image_a_running_container_uses_is_refused(lab):
    docker(lab, "tag", "busybox", "used:1")
    image_id = docker(lab, "image", "inspect", "--format", "{{.Id}}", "used:1").stdout.strip()
    cid = docker(lab, "run", "-d", "--network", "none", "--name", "user1", "used:1", "sleep", "300").stdout.strip()
    try:
        # Two tags: one can go without force; then used:1 is the container's only name for it.
        assert docker(lab, "rmi", "busybox").stdout == "Untagged: busybox:latest\n"
        refused = docker(lab, "rmi", "used:1", check=False)
        assert (refused.returncode, refused.stderr) == (1, (
            f'Error response from daemon: conflict: unable to remove repository reference "used:1" (must force) - '
            f"container {cid[:12]} is using its referenced image {image_id[7:19]}\n"
        ))
        by_id = docker(lab, "image", "rm", "-f", image_id[7:19], check=False)
        assert (by_id.returncode, by_id.stderr) == (1, (
            f"Error response from daemon: conflict: unable to delete {image_id[7:19]} (cannot be forced) - "
            f"image is being used by running container {cid[:12]}\n"
        ))
        assert docker(lab, "image", "rm", "-f", "used:1").stdout == "Untagged: used:1\n"
        assert image_id in image_ids(lab)  # untagged (<none>), kept for its running container
        assert docker(lab, "exec", "user1", "echo", "alive").stdout == "alive\n"
    finally:
        docker(lab, "rm", "-f", "user1", check=False)
        docker(lab, "tag", image_id, "busybox:latest", check=False)


def test_docker_rmi_by_id_of_an_image_with_two_tags_must_be_forced(lab, tmp_path: Path):
    layer = tar_of({"etc/two": b"2"})
    path = tmp_path / "two.tar"
    path.write_bytes(docker_save(layer, "two:1"))
    docker(lab, "load", "-i", str(path))
    docker(lab, "tag", "two:1", "two:2")
    image_id = docker(lab, "image", "inspect", "--format", "{{.Id}}", "two:1").stdout.strip()
    refused = docker(lab, "rmi", image_id[7:19], check=False)
    assert (refused.returncode, refused.stderr) == (1, (
        f"Error response from daemon: conflict: unable to delete {image_id[7:19]} (must be forced) - "
        "image is referenced in multiple repositories\n"
    ))
    assert docker(lab, "image", "rm", "-f", image_id[7:19]).stdout == (
        f"Untagged: two:1\nUntagged: two:2\nDeleted: {image_id}\nDeleted: sha256:{sha(layer)}\n"
    )


def test_docker_py_removes_an_image_and_sees_the_conflict_as_409(lab, tmp_path: Path):
    import docker as docker_py  # requirements.txt pins docker (docker-py)
    layer = tar_of({"etc/py": b"py"})
    client = docker_py.DockerClient(base_url=f"unix://{lab.socket('h1')}", version="auto")
    try:
        loaded = client.images.load(docker_save(layer, "py:1"))
        assert [i.tags for i in loaded] == [["py:1"]]
        container = client.containers.create("py:1", ["sh"], name="pyuser", network_mode="none")
        with pytest.raises(docker_py.errors.APIError) as refused:
            client.images.remove("py:1")
        assert refused.value.status_code == 409
        assert refused.value.explanation == (
            f'conflict: unable to remove repository reference "py:1" (must force) - container '
            f"{container.id[:12]} is using its referenced image {loaded[0].id[7:19]}"
        )
        container.remove()
        client.images.remove("py:1", noprune=True)
        with pytest.raises(docker_py.errors.ImageNotFound):
            client.images.get("py:1")
    finally:
        client.close()


def test_a_load_that_fills_the_disk_is_a_system_error_and_leaves_nothing(tmp_path: Path):
    # A real full disk: a 1 MiB tmpfs under the store, and a layer with 2 MiB in it.
    from agent.images.store import ImageStore
    from common.errdefs import SystemError_

    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    try:
        store = ImageStore(mount / "images")
        layer = tar_of({"big": os.urandom(2 << 20)})
        with pytest.raises(SystemError_) as failed:
            store.load(io.BytesIO(docker_save(layer, "full:1")))
        assert failed.value.message == f"layer 1 ({sha(layer)}/layer.tar): entry 'big': No space left on device"
        assert store.list() == []
        assert sorted(str(p.relative_to(mount)) for p in mount.rglob("*")) == ["images", "images/sha256", "images/tmp"]
        small = tar_of({"etc/ok": b"ok"})
        assert store.load(io.BytesIO(docker_save(small, "fits:1"))) == ["fits:1"]
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_kill9_in_the_middle_of_a_load_leaves_the_image_or_nothing(lab, tmp_path: Path):
    layer = tar_of({f"files/{n:05d}": b"x" * 100 for n in range(3000)})
    path = tmp_path / "slow.tar"
    path.write_bytes(docker_save(layer, "slow:1"))
    work = data_dir(lab.name, "h1") / "images" / "tmp"

    def unpacking() -> bool:
        return any(len(os.listdir(d)) > 50 for d in work.glob("load-*/*/rootfs/files"))

    client = subprocess.Popen(lab.exec_argv("h1", [DOCKER, "load", "-i", str(path)]), env=lab.host_env("h1"),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(unpacking, timeout=60, interval=0.01)
        lab.restart_daemon("h1", kill9=True)
    finally:
        client.wait(timeout=60)
    assert os.listdir(work) == []
    on_disk = sorted("sha256:" + p.name for p in (work.parent / "sha256").iterdir())
    assert on_disk == image_ids(lab)
    assert "slow:1" not in docker(lab, "images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()


def test_shoal_rmi_prints_what_docker_prints(lab, tmp_path: Path):
    layer = tar_of({"etc/s": b"s"})
    path = tmp_path / "s.tar"
    path.write_bytes(docker_save(layer, "shoalrm:1"))
    shoal(lab, "image", "load", "-i", str(path))
    image_id = json.loads(shoal(lab, "image", "inspect", "shoalrm:1").stdout)[0]["Id"]
    assert shoal(lab, "rmi", "--no-prune", "shoalrm:1").stdout == (
        f"Untagged: shoalrm:1\nDeleted: {image_id}\nDeleted: sha256:{sha(layer)}\n"
    )
    missing = shoal(lab, "image", "rm", "-f", "shoalrm:1", check=False)
    assert (missing.returncode, missing.stderr) == (1, "Error response from daemon: No such image: shoalrm:1\n")
