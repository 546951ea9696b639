"""The image store: docker save and OCI layout loads, references, tags, atomicity, busybox image."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from agent.images.busybox import build_busybox_tar, ensure_busybox
from agent.images.store import (
    AmbiguousImageRef,
    ImageError,
    ImageLoadError,
    ImageNotFound,
    ImageStore,
    normalize_ref,
)
from common.errdefs import Conflict


def tar_bytes(files: dict[str, bytes], symlinks: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
        for name, target in (symlinks or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return buf.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def config_for(layers: list[bytes], **extra: object) -> bytes:
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "2023-05-19T20:19:30.123456789Z",
        "config": {"Cmd": ["sh"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + sha(x) for x in layers]},
    }
    config.update(extra)
    return json.dumps(config).encode()


def docker_save(images: list[tuple[list[bytes], list[str]]], blobs: bool = False, **extra: object) -> bytes:
    """A `docker save` tarball; layers as <id>/layer.tar, or blobs/sha256/<hex> when `blobs`."""
    files: dict[str, bytes] = {}
    manifest = []
    for layers, tags in images:
        config = config_for(layers, **extra)
        config_name = f"blobs/sha256/{sha(config)}" if blobs else f"{sha(config)}.json"
        files[config_name] = config
        paths = []
        for data in layers:
            path = f"blobs/sha256/{sha(data)}" if blobs else f"{sha(data)}/layer.tar"
            files[path] = data
            paths.append(path)
        manifest.append({"Config": config_name, "RepoTags": tags or None, "Layers": paths})
    files["manifest.json"] = json.dumps(manifest).encode()
    return tar_bytes(files)


def oci_layout(layers: list[bytes], annotations: dict[str, str], plain_layers: list[bytes] | None = None,
               platform_index: bool = False) -> bytes:
    """An OCI image layout tarball; `layers` are the blobs as stored, `plain_layers` uncompressed."""
    files: dict[str, bytes] = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}'}
    config = config_for(plain_layers or layers)
    files[f"blobs/sha256/{sha(config)}"] = config
    for data in layers:
        files[f"blobs/sha256/{sha(data)}"] = data
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + sha(config),
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": "sha256:" + sha(x),
                    "size": len(x)} for x in layers],
    }).encode()
    files[f"blobs/sha256/{sha(manifest)}"] = manifest
    top = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + sha(manifest),
           "size": len(manifest)}
    if platform_index:
        other = json.dumps({"schemaVersion": 2, "config": {"digest": "sha256:" + "0" * 64}, "layers": []}).encode()
        index = json.dumps({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + sha(other),
                 "size": len(other), "platform": {"architecture": "arm64", "os": "linux"}},
                dict(top, platform={"architecture": "amd64", "os": "linux"}),
            ],
        }).encode()
        files[f"blobs/sha256/{sha(index)}"] = index
        top = {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": "sha256:" + sha(index),
               "size": len(index)}
    files["index.json"] = json.dumps({"schemaVersion": 2, "manifests": [dict(top, annotations=annotations)]}).encode()
    return tar_bytes(files)


def layer(files: dict[str, bytes]) -> bytes:
    return tar_bytes(files)


BASE = layer({"bin/sh": b"shell", "etc/motd": b"hello"})
TOP = layer({"etc/motd": b"bye", "etc/.wh.gone": b""})


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "images")


def load(store: ImageStore, data: bytes) -> list[str]:
    return store.load(io.BytesIO(data))


def store_leftovers(store: ImageStore) -> list[str]:
    """Everything in the store besides index.json and the empty sha256/ and tmp/ dirs."""
    return sorted(
        str(p.relative_to(store.root)) for p in store.root.rglob("*")
        if p.name not in ("index.json", "sha256", "tmp") or p.parent != store.root
    )


def test_docker_save_load_returns_tags(store: ImageStore) -> None:
    assert load(store, docker_save([([BASE, TOP], ["busybox:latest", "example/app:1.0"])])) == [
        "busybox:latest", "example/app:1.0"]


def test_loaded_image_has_config_layers_and_rootfs(store: ImageStore) -> None:
    load(store, docker_save([([BASE, TOP], ["busybox:latest"])]))
    image = store.get("busybox")
    assert image.id == "sha256:" + sha(config_for([BASE, TOP]))
    assert image.repo_tags == ["busybox:latest"]
    assert image.created == "2023-05-19T20:19:30.123456789Z"
    assert (image.architecture, image.os) == ("amd64", "linux")
    assert image.config == {"Cmd": ["sh"], "Env": ["PATH=/bin"]}
    assert image.layers == ["sha256:" + sha(BASE), "sha256:" + sha(TOP)]
    assert (image.rootfs / "etc/motd").read_bytes() == b"bye"
    assert (image.rootfs / "bin/sh").read_bytes() == b"shell"
    assert image.size == len(b"shell") + len(b"bye")


@pytest.mark.parametrize("form", [
    "busybox", "busybox:latest", "library/busybox:latest", "docker.io/library/busybox:latest",
    "docker.io/library/busybox", "index.docker.io/library/busybox:latest", "FULL", "BARE", "PREFIX", "SHORT",
])
def test_get_by_every_reference_form(store: ImageStore, form: str) -> None:
    load(store, docker_save([([BASE], ["busybox:latest"])]))
    image_id = "sha256:" + sha(config_for([BASE]))
    ref = {"FULL": image_id, "BARE": image_id[7:], "PREFIX": "sha256:" + image_id[7:19],
           "SHORT": image_id[7:19]}.get(form, form)
    assert store.get(ref).id == image_id


def test_blobs_layout_of_docker_save_loads(store: ImageStore) -> None:
    assert load(store, docker_save([([BASE], ["app:2"])], blobs=True)) == ["app:2"]
    assert (store.get("app:2").rootfs / "etc/motd").read_bytes() == b"hello"


def test_blob_whose_content_does_not_match_its_name_is_refused(store: ImageStore) -> None:
    good = docker_save([([BASE], ["app:2"])], blobs=True)
    with tarfile.open(fileobj=io.BytesIO(good)) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    files[f"blobs/sha256/{sha(BASE)}"] = layer({"bin/sh": b"evil!", "etc/motd": b"hello"})
    with pytest.raises(ImageLoadError, match=rf"layer 1 \(blobs/sha256/{sha(BASE)}\): content digest sha256:"):
        load(store, tar_bytes(files))
    assert store.list() == []


def test_layer_not_matching_diff_id_is_refused(store: ImageStore) -> None:
    data = docker_save([([BASE], ["app:1"])])
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    files[f"{sha(BASE)}/layer.tar"] = TOP
    with pytest.raises(ImageLoadError, match="does not match the config's diff_id sha256:" + sha(BASE)):
        load(store, tar_bytes(files))


def test_oci_layout_with_gzip_layer_loads_with_its_ref_name(store: ImageStore) -> None:
    data = oci_layout([gzip.compress(BASE)], {"org.opencontainers.image.ref.name": "example/web:3"}, [BASE])
    assert load(store, data) == ["example/web:3"]
    assert (store.get("example/web:3").rootfs / "bin/sh").read_bytes() == b"shell"


def test_oci_layout_prefers_containerd_image_name(store: ImageStore) -> None:
    data = oci_layout([BASE], {"io.containerd.image.name": "docker.io/library/busybox:latest",
                               "org.opencontainers.image.ref.name": "latest"})
    assert load(store, data) == ["busybox:latest"]


def test_oci_image_index_picks_the_linux_amd64_manifest(store: ImageStore) -> None:
    data = oci_layout([BASE], {"org.opencontainers.image.ref.name": "multi:1"}, platform_index=True)
    assert load(store, data) == ["multi:1"]
    assert store.get("multi:1").id == "sha256:" + sha(config_for([BASE]))


def test_oci_layout_missing_blob_is_named(store: ImageStore) -> None:
    data = oci_layout([BASE], {})
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    del files[f"blobs/sha256/{sha(BASE)}"]
    with pytest.raises(ImageLoadError, match=f"invalid tar: blobs/sha256/{sha(BASE)} not found"):
        load(store, tar_bytes(files))


def test_untagged_image_load_returns_its_id(store: ImageStore) -> None:
    image_id = "sha256:" + sha(config_for([BASE]))
    assert load(store, oci_layout([BASE], {})) == [image_id]
    assert store.get(image_id).repo_tags == []


def test_missing_image_message_names_normalised_ref(store: ImageStore) -> None:
    with pytest.raises(ImageNotFound) as e:
        store.get("docker.io/library/busybox")
    assert e.value.message == "No such image: busybox:latest"


def test_missing_full_id_message_names_the_id(store: ImageStore) -> None:
    with pytest.raises(ImageNotFound) as e:
        store.get("sha256:" + "a" * 64)
    assert e.value.message == "No such image: sha256:" + "a" * 64


def test_ambiguous_id_prefix_is_refused(store: ImageStore) -> None:
    by_first_hex: dict[str, list[bytes]] = {}
    n = 0
    while True:  # find two images whose ids share the first hex digit (pigeonhole: <= 17 tries)
        data = layer({f"f{n}": b"x"})
        by_first_hex.setdefault(sha(config_for([data]))[0], []).append(data)
        n += 1
        pair = next((v for v in by_first_hex.values() if len(v) == 2), None)
        if pair:
            break
    load(store, docker_save([([pair[0]], []), ([pair[1]], [])]))
    prefix = sha(config_for([pair[0]]))[0]
    with pytest.raises(AmbiguousImageRef, match=f"multiple IDs found with provided prefix: {prefix}"):
        store.get(prefix)
    assert store.get(sha(config_for([pair[1]]))[:12]).id == "sha256:" + sha(config_for([pair[1]]))


def test_garbage_bytes_are_refused(store: ImageStore) -> None:
    with pytest.raises(ImageLoadError, match="invalid tar"):
        load(store, b"\x00garbage" * 1000)
    assert store_leftovers(store) == []


def test_tar_without_manifest_is_refused_by_name(store: ImageStore) -> None:
    with pytest.raises(ImageLoadError, match="invalid tar: manifest.json not found"):
        load(store, tar_bytes({"hello.txt": b"hi"}))


def test_failed_load_leaves_nothing_behind(store: ImageStore) -> None:
    bad = tar_bytes({"ok": b"1", "../escape": b"2"})
    with pytest.raises(ImageLoadError, match=r"layer 1 \(.*/layer.tar\): entry '../escape' escapes"):
        load(store, docker_save([([BASE], ["good:1"]), ([bad], ["bad:1"])]))
    assert store.list() == []
    assert store_leftovers(store) == []
    with pytest.raises(ImageNotFound):
        store.get("good:1")


def test_symlink_escape_in_layer_is_refused_and_host_untouched(store: ImageStore, tmp_path: Path) -> None:
    host = tmp_path / "hostetc"
    host.mkdir()
    evil = tar_bytes({"a/passwd": b"pwned"}, symlinks={})
    link = tar_bytes({}, symlinks={"a": str(host)})
    with pytest.raises(ImageLoadError, match="escapes the root filesystem through symlink a ->"):
        load(store, docker_save([([link, evil], ["evil:1"])]))
    assert os.listdir(host) == []
    assert store_leftovers(store) == []


def test_store_persists_across_instances(store: ImageStore, tmp_path: Path) -> None:
    load(store, docker_save([([BASE], ["busybox:latest"])]))
    again = ImageStore(tmp_path / "images")
    assert [(i.id, i.repo_tags) for i in again.list()] == [("sha256:" + sha(config_for([BASE])), ["busybox:latest"])]


def test_reload_of_same_image_moves_no_files(store: ImageStore) -> None:
    load(store, docker_save([([BASE], ["a:1"])]))
    assert load(store, docker_save([([BASE], ["b:1"])])) == ["b:1"]
    assert store.get("a:1").repo_tags == ["a:1", "b:1"]


def test_retagged_load_moves_the_tag(store: ImageStore) -> None:
    load(store, docker_save([([BASE], ["app:1"])]))
    load(store, docker_save([([TOP], ["app:1"])]))
    assert store.get("app:1").id == "sha256:" + sha(config_for([TOP]))
    assert store.get("sha256:" + sha(config_for([BASE]))).repo_tags == []


def test_tag_adds_a_normalised_name(store: ImageStore) -> None:
    load(store, docker_save([([BASE], ["busybox:latest"])]))
    image_id = store.get("busybox").id
    store.tag(image_id, "docker.io/library/mybox")
    assert store.get("mybox").id == image_id
    assert store.get(image_id).repo_tags == ["busybox:latest", "mybox:latest"]


def test_tag_of_unknown_image_is_not_found(store: ImageStore) -> None:
    with pytest.raises(ImageNotFound, match="No such image: nope:latest"):
        store.tag("nope", "x:1")


def test_remove_by_tag_untags_then_deletes_last(store: ImageStore) -> None:
    load(store, docker_save([([BASE], ["a:1", "b:1"])]))
    image = store.get("a:1")
    assert store.remove("a:1") == [{"Untagged": "a:1"}]
    assert image.rootfs.exists()
    assert store.remove("b:1") == [{"Untagged": "b:1"}, {"Deleted": image.id}, {"Deleted": "sha256:" + sha(BASE)}]
    store.empty_trash()
    assert not image.rootfs.exists()
    assert store.list() == []


def test_remove_by_id_with_several_tags_needs_force(store: ImageStore) -> None:
    load(store, docker_save([([BASE], ["a:1", "b:1"])]))
    image_id = store.get("a:1").id
    with pytest.raises(Conflict, match="must be forced"):
        store.remove(image_id)
    store.remove(image_id, force=True)
    assert store.list() == []


@pytest.mark.parametrize("ref,expected", [
    ("busybox", "busybox:latest"),
    ("busybox:1.36", "busybox:1.36"),
    ("library/busybox", "busybox:latest"),
    ("docker.io/library/busybox:latest", "busybox:latest"),
    ("docker.io/foo/bar", "foo/bar:latest"),
    ("localhost:5000/app", "localhost:5000/app:latest"),
    ("registry.example.com/team/app:v2", "registry.example.com/team/app:v2"),
    ("busybox@sha256:" + "b" * 64, "busybox@sha256:" + "b" * 64),
])
def test_normalize_ref(ref: str, expected: str) -> None:
    assert normalize_ref(ref) == expected


@pytest.mark.parametrize("ref", ["", "Busybox", "busybox:", "a//b", "busybox:bad tag", "-x"])
def test_normalize_ref_refuses_bad_reference(ref: str) -> None:
    with pytest.raises(ImageError, match="invalid reference format"):
        normalize_ref(ref)


def test_busybox_tar_loads_with_sh_linked_to_busybox(store: ImageStore, tmp_path: Path) -> None:
    tarball = build_busybox_tar(tmp_path / "busybox.tar")
    with open(tarball, "rb") as f:
        assert store.load(f) == ["busybox:latest"]
    image = store.get("busybox")
    assert os.readlink(image.rootfs / "bin/sh") == "busybox"
    assert (image.rootfs / "bin/busybox").is_file()
    assert image.config == {"Cmd": ["sh"],
                            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]}
    assert (image.rootfs / "etc/passwd").read_text().startswith("root:x:0:0:")
    assert oct(os.stat(image.rootfs / "tmp").st_mode & 0o7777) == "0o1777"


def test_busybox_build_is_deterministic(tmp_path: Path) -> None:
    one = build_busybox_tar(tmp_path / "one.tar").read_bytes()
    two = build_busybox_tar(tmp_path / "two.tar").read_bytes()
    assert sha(one) == sha(two)
    a, b = ImageStore(tmp_path / "s1"), ImageStore(tmp_path / "s2")
    assert ensure_busybox(a).id == ensure_busybox(b).id


def test_ensure_busybox_loads_once(store: ImageStore) -> None:
    first = ensure_busybox(store)
    assert ensure_busybox(store) == first
    assert [i.id for i in store.list()] == [first.id]


def test_gzip_compressed_docker_save_loads(store: ImageStore) -> None:
    assert load(store, gzip.compress(docker_save([([BASE], ["zipped:1"])]))) == ["zipped:1"]


def test_docker_save_layer_stored_as_symlink_member_loads(store: ImageStore) -> None:
    # Old `docker save` writes a layer shared by two images once and symlinks the other copy.
    config = config_for([BASE])
    files = {f"{sha(config)}.json": config, "aaa/layer.tar": BASE,
             "manifest.json": json.dumps([{"Config": f"{sha(config)}.json", "RepoTags": ["s:1"],
                                           "Layers": ["bbb/layer.tar"]}]).encode()}
    assert load(store, tar_bytes(files, symlinks={"bbb/layer.tar": "../aaa/layer.tar"})) == ["s:1"]
    assert (store.get("s:1").rootfs / "bin/sh").read_bytes() == b"shell"


def test_config_not_matching_its_file_name_is_refused(store: ImageStore) -> None:
    config = config_for([BASE])
    wrong = "c" * 64
    files = {f"{wrong}.json": config, "l/layer.tar": BASE,
             "manifest.json": json.dumps([{"Config": f"{wrong}.json", "Layers": ["l/layer.tar"]}]).encode()}
    with pytest.raises(ImageLoadError, match=f"invalid tar: {wrong}.json: content digest sha256:{sha(config)} "
                                             f"does not match sha256:{wrong}"):
        load(store, tar_bytes(files))


class _Pipe:
    """A read-only, non-seekable stream like an HTTP request body."""

    def __init__(self, data: bytes) -> None:
        self._buf = io.BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        return self._buf.read(size)

    def seekable(self) -> bool:
        return False


def test_non_seekable_stream_loads(store: ImageStore) -> None:
    assert store.load(_Pipe(docker_save([([BASE, TOP], ["piped:1"])]))) == ["piped:1"]  # type: ignore[arg-type]
    assert (store.get("piped:1").rootfs / "etc/motd").read_bytes() == b"bye"
    assert store_leftovers(store) == [f"sha256/{sha(config_for([BASE, TOP]))}"] + sorted(
        f"sha256/{sha(config_for([BASE, TOP]))}/{p}"
        for p in ["config.json", "rootfs", "rootfs/bin", "rootfs/bin/sh", "rootfs/etc", "rootfs/etc/motd"])
