"""Image loads under hostile input: size and entry limits, huge headers, truncated or malformed
tarballs; every refusal names the problem and leaves nothing behind (small bombs, low limits)."""
from __future__ import annotations

import gzip
import io
import json
import os
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.images.store import ImageLoadError, ImageStore, ImageTooLarge, LoadLimits
from agent.images.unpack import Budget, apply_layer, remove_tree
from tests.unit.test_image_store import BASE, config_for, docker_save, sha, store_leftovers, tar_bytes

KIB = 1024


def small_store(tmp_path: Path, **limits: int) -> ImageStore:
    return ImageStore(tmp_path / "images", LoadLimits(**limits))


def load(store: ImageStore, data: bytes) -> list[str]:
    return store.load(io.BytesIO(data))


def label(layer: bytes, n: int = 1) -> str:
    return f"layer {n} ({sha(layer)}/layer.tar)"


def header_only(info: tarfile.TarInfo, fmt: int = tarfile.PAX_FORMAT) -> bytes:
    """One tar header with no data after it: what a header claiming a huge size looks like."""
    return info.tobuf(fmt, "utf-8", "surrogateescape")


def assert_nothing_left(store: ImageStore) -> None:
    assert store.list() == []
    assert store_leftovers(store) == []


# -- size ------------------------------------------------------------------------------------


def test_gzip_bomb_layer_is_refused_at_the_size_limit(tmp_path: Path) -> None:
    bomb = gzip.compress(tar_bytes({"zeros": bytes(1024 * KIB)}))
    assert len(bomb) < 4 * KIB
    store = small_store(tmp_path, max_bytes=64 * KIB)
    with pytest.raises(ImageTooLarge) as refused:
        load(store, docker_save([([bomb], ["bomb:1"])]))
    assert refused.value.message == (
        f"{label(bomb)}: the image expands beyond the daemon's --max-image-size of 65536 bytes"
    )
    assert_nothing_left(store)


def test_entry_whose_header_claims_too_much_is_refused_before_any_data(tmp_path: Path) -> None:
    info = tarfile.TarInfo("huge")
    info.size = 1 << 40  # a terabyte claimed, not one byte of it present
    root = tmp_path / "rootfs"
    root.mkdir()
    with pytest.raises(ImageTooLarge, match=r"^layer: the image expands beyond the daemon's --max-image-size of 65536 bytes$"):
        apply_layer(root, io.BytesIO(header_only(info)), "layer", Budget(LoadLimits(max_bytes=64 * KIB)))
    assert not (root / "huge").exists()


def test_sparse_entry_counts_its_real_size(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("GNUSparseFile.0/holes")
        info.pax_headers = {"GNU.sparse.major": "0", "GNU.sparse.minor": "1", "GNU.sparse.name": "holes",
                            "GNU.sparse.size": str(1 << 30), "GNU.sparse.map": "0,0", "GNU.sparse.numblocks": "1"}
        tar.addfile(info)
    root = tmp_path / "rootfs"
    root.mkdir()
    with pytest.raises(ImageTooLarge, match="--max-image-size of 65536 bytes"):
        apply_layer(root, io.BytesIO(buf.getvalue()), "layer", Budget(LoadLimits(max_bytes=64 * KIB)))
    assert list(root.iterdir()) == []


def test_layers_of_one_load_share_the_size_budget(tmp_path: Path) -> None:
    first = tar_bytes({"a": b"a" * 40 * KIB})
    second = tar_bytes({"b": b"b" * 40 * KIB})
    store = small_store(tmp_path, max_bytes=64 * KIB)
    with pytest.raises(ImageTooLarge, match="^" + re.escape(f"{label(second, 2)}: the image expands beyond")):
        load(store, docker_save([([first, second], ["two:1"])]))
    assert_nothing_left(store)


def test_decompressed_bytes_count_even_when_nothing_is_written(tmp_path: Path) -> None:
    # A tiny valid tar followed by a megabyte of zeros: nothing is written, but the bytes
    # are decompressed (the digest covers them), and that is what the limit bounds.
    plain = tar_bytes({"a": b"x"}) + bytes(1024 * KIB)
    layer = gzip.compress(plain)
    root = tmp_path / "rootfs"
    root.mkdir()
    with pytest.raises(ImageTooLarge, match=r"^layer: the image expands beyond the daemon's --max-image-size"):
        apply_layer(root, io.BytesIO(layer), "layer", Budget(LoadLimits(max_bytes=64 * KIB)))


def test_image_within_the_limits_loads(tmp_path: Path) -> None:
    store = small_store(tmp_path, max_bytes=64 * KIB, max_entries=10)
    assert load(store, docker_save([([BASE], ["ok:1"])])) == ["ok:1"]


# -- entries, names, headers -----------------------------------------------------------------


def test_too_many_entries_in_a_layer_are_refused(tmp_path: Path) -> None:
    many = tar_bytes({f"f{n}": b"" for n in range(101)})
    store = small_store(tmp_path, max_entries=100)
    with pytest.raises(ImageTooLarge) as refused:
        load(store, docker_save([([many], ["many:1"])]))
    assert refused.value.message == (
        f"{label(many)}: the image has more than the daemon's --max-image-entries of 100 tar entries"
    )
    assert_nothing_left(store)


def test_too_many_entries_in_the_outer_tar_are_refused(tmp_path: Path) -> None:
    store = small_store(tmp_path, max_entries=100)
    with pytest.raises(ImageTooLarge, match=r"^invalid tar: the image has more than the daemon's "
                                            r"--max-image-entries of 100 tar entries$"):
        load(store, tar_bytes({f"junk{n}": b"" for n in range(101)}))
    assert_nothing_left(store)


def test_entry_name_longer_than_path_max_is_refused_with_a_short_message(tmp_path: Path) -> None:
    name = "d/" * 2500 + "f"
    layer = tar_bytes({name: b"x"})
    store = small_store(tmp_path)
    with pytest.raises(ImageLoadError) as refused:
        load(store, docker_save([([layer], ["long:1"])]))
    assert refused.value.message == (
        f"{label(layer)}: entry {name[:200]!r}... (5001 characters): the name is longer than 4096 bytes (PATH_MAX)"
    )
    assert_nothing_left(store)


def test_pax_header_over_one_mib_is_refused_before_it_is_read(tmp_path: Path) -> None:
    info = tarfile.TarInfo("././@PaxHeader")
    info.type, info.size = tarfile.XHDTYPE, 2 << 20
    root = tmp_path / "rootfs"
    root.mkdir()
    with pytest.raises(ImageTooLarge) as refused:
        apply_layer(root, io.BytesIO(header_only(info, tarfile.USTAR_FORMAT)), "layer")
    assert refused.value.message == (
        "layer: invalid layer tar: a pax header of 2097152 bytes is over the limit of 1048576 bytes"
    )


def test_long_name_header_over_one_mib_in_the_outer_tar_is_refused(tmp_path: Path) -> None:
    info = tarfile.TarInfo("././@LongLink")
    info.type, info.size = tarfile.GNUTYPE_LONGNAME, 2 << 20
    store = small_store(tmp_path)
    with pytest.raises(ImageTooLarge, match=r"^invalid tar: a long-name header of 2097152 bytes is over the "
                                            r"limit of 1048576 bytes$"):
        load(store, header_only(info, tarfile.GNU_FORMAT) + bytes(1024))
    assert_nothing_left(store)


def test_manifest_over_the_json_limit_is_refused(tmp_path: Path) -> None:
    store = small_store(tmp_path, max_json=1 * KIB)
    manifest = json.dumps([{"Config": "x" * 2048, "Layers": []}]).encode()
    with pytest.raises(ImageTooLarge, match=r"^invalid tar: manifest.json is larger than 1024 bytes$"):
        load(store, tar_bytes({"manifest.json": manifest}))
    assert_nothing_left(store)


def test_device_nodes_in_a_layer_are_skipped(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, kind in (("dev/sda", tarfile.BLKTYPE), ("dev/mem", tarfile.CHRTYPE)):
            info = tarfile.TarInfo(name)
            info.type, info.devmajor, info.devminor = kind, 1, 1
            tar.addfile(info)
        info = tarfile.TarInfo("etc/ok")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"ok"))
    root = tmp_path / "rootfs"
    root.mkdir()
    apply_layer(root, io.BytesIO(buf.getvalue()), "layer")
    assert sorted(p.name for p in (root / "dev").iterdir()) == []
    assert (root / "etc/ok").read_bytes() == b"ok"


# -- truncated and malformed tarballs --------------------------------------------------------

GOOD = docker_save([([BASE], ["good:1"])])


def member_offsets(data: bytes) -> dict[str, tuple[int, int]]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: (m.offset, m.offset_data) for m in tar.getmembers()}


def test_tar_cut_inside_a_layer_is_unexpected_eof(tmp_path: Path) -> None:
    name = f"{sha(BASE)}/layer.tar"
    _, data_at = member_offsets(GOOD)[name]
    store = small_store(tmp_path)
    with pytest.raises(ImageLoadError) as refused:
        load(store, GOOD[: data_at + 100])
    assert refused.value.message == f"invalid tar: unexpected EOF: the archive ends inside {name!r}"
    assert_nothing_left(store)


def test_tar_cut_inside_a_header_is_unexpected_eof(tmp_path: Path) -> None:
    first = min(member_offsets(GOOD).items(), key=lambda kv: kv[1][0])[0]
    second_at = sorted(off for off, _ in member_offsets(GOOD).values())[1]
    store = small_store(tmp_path)
    with pytest.raises(ImageLoadError) as refused:
        load(store, GOOD[: second_at + 300])
    assert refused.value.message == (
        f"invalid tar: unexpected EOF: the archive is cut short in a header after {first!r}"
    )
    assert_nothing_left(store)


def test_garbage_after_the_last_member_is_an_invalid_header(tmp_path: Path) -> None:
    tar = tar_bytes({"manifest.json": b"[]"})
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        end = t.offset
    store = small_store(tmp_path)
    with pytest.raises(ImageLoadError, match=r"^invalid tar: invalid tar header after 'manifest.json'$"):
        load(store, tar[:end] + b"\x07garbage" * 64 + bytes(1024))


def test_truncated_gzip_tarball_is_unexpected_eof(tmp_path: Path) -> None:
    data = gzip.compress(GOOD)
    store = small_store(tmp_path)
    with pytest.raises(ImageLoadError, match=r"^invalid tar: unexpected EOF \(Compressed file ended"):
        load(store, data[: len(data) // 2])
    assert_nothing_left(store)


@pytest.mark.parametrize("cut", [512, 1000, 2048, 4096, 6000, 9000])
def test_every_cut_of_a_good_tarball_is_refused_and_leaves_nothing(tmp_path: Path, cut: int) -> None:
    assert cut < len(GOOD) - 1024  # still a strict prefix, before the end-of-archive blocks
    store = small_store(tmp_path)
    with pytest.raises(ImageLoadError, match="^invalid tar: "):
        load(store, GOOD[:cut])
    assert_nothing_left(store)


def test_empty_body_is_refused(tmp_path: Path) -> None:
    store = small_store(tmp_path)
    with pytest.raises(ImageLoadError, match=r"^invalid tar: the input is empty \(expected a docker save "
                                             r"tarball or an OCI image layout\)$"):
        load(store, b"")


def test_bytes_that_are_not_a_tar_are_refused(tmp_path: Path) -> None:
    store = small_store(tmp_path)
    with pytest.raises(ImageLoadError, match=r"^invalid tar: the input is not a tar archive \(plain, gzip, "
                                             r"bzip2 or xz\): invalid header$"):
        load(store, b"hello, this is not a tarball\n" * 100)
    assert_nothing_left(store)


@pytest.mark.parametrize("manifest,message", [
    ({}, "invalid tar: manifest.json must be a JSON array of images, not object"),
    ([], "invalid tar: manifest.json lists no images"),
    ([5], "invalid tar: manifest.json entry 0 must be a JSON object, not number"),
    ([{}], "invalid tar: manifest.json entry 0 has no Config"),
    ([{"Config": 5}], "invalid tar: manifest.json entry 0: Config must be a string, not number"),
    ([{"Config": "c.json", "Layers": "a"}], "invalid tar: manifest.json entry 0: Layers must be an array of strings"),
    ([{"Config": "c.json", "RepoTags": [1]}],
     "invalid tar: manifest.json entry 0: RepoTags must be an array of strings"),
    ([{"Config": "nope.json"}], "invalid tar: manifest.json entry 0: Config nope.json is not in the archive"),
    ([{"Config": "c.json", "Layers": ["gone/layer.tar"]}],
     "invalid tar: manifest.json entry 0: layer gone/layer.tar is not in the archive"),
])
def test_bad_manifest_is_refused_naming_the_problem(tmp_path: Path, manifest: object, message: str) -> None:
    store = small_store(tmp_path)
    with pytest.raises(ImageLoadError) as refused:
        load(store, tar_bytes({"manifest.json": json.dumps(manifest).encode(), "c.json": config_for([])}))
    assert refused.value.message == message
    assert_nothing_left(store)


# -- what a crash leaves -----------------------------------------------------------------------


def test_next_start_removes_what_an_interrupted_load_left(tmp_path: Path) -> None:
    store = small_store(tmp_path)
    load(store, GOOD)
    (store.root / "tmp" / "load-abc" / "x" / "rootfs").mkdir(parents=True)
    (store.root / "tmp" / "load-abc" / "input.tar").write_bytes(b"half")
    (store.root / ".tmp-index.json.1234").write_bytes(b"")
    (store.root / "sha256" / ("e" * 64) / "rootfs").mkdir(parents=True)  # unpacked, never indexed
    again = small_store(tmp_path)
    assert [i.repo_tags for i in again.list()] == [["good:1"]]
    assert store_leftovers(again) == [
        f"sha256/{sha(config_for([BASE]))}",
        f"sha256/{sha(config_for([BASE]))}/config.json",
        f"sha256/{sha(config_for([BASE]))}/rootfs",
        f"sha256/{sha(config_for([BASE]))}/rootfs/bin",
        f"sha256/{sha(config_for([BASE]))}/rootfs/bin/sh",
        f"sha256/{sha(config_for([BASE]))}/rootfs/etc",
        f"sha256/{sha(config_for([BASE]))}/rootfs/etc/motd",
    ]


# -- deep trees ------------------------------------------------------------------------------


@pytest.fixture
def deep_tmp(tmp_path: Path) -> Iterator[Path]:
    """tmp_path, emptied with remove_tree whatever happens: pytest's own cleanup (shutil.rmtree)
    recurses per level and would fail on what these tests make, in every later pytest run."""
    try:
        yield tmp_path
    finally:
        for child in tmp_path.iterdir():
            remove_tree(child)


def test_tree_deeper_than_the_recursion_limit_loads_and_is_removed_without_leftovers(deep_tmp: Path) -> None:
    deep = tar_bytes({"a/" * 1100 + "f": b"x"})  # 3.11's shutil.rmtree stops at ~1000 levels
    store = small_store(deep_tmp)
    assert load(store, docker_save([([deep], ["deep:1"])])) == ["deep:1"]
    assert store.get("deep:1").size == 1
    store.remove("deep:1")
    store.empty_trash()
    assert_nothing_left(store)


def test_tree_deeper_than_path_max_is_refused_and_cleaned_up(deep_tmp: Path) -> None:
    deep = tar_bytes({("a" * 99 + "/") * 40 + "f": b"x"})  # 4001 bytes: fits PATH_MAX alone, not under the store
    store = small_store(deep_tmp)
    with pytest.raises(ImageLoadError, match=r"^" + re.escape(f"{label(deep)}: entry ") + r".*: File name too long$"):
        load(store, docker_save([([deep], ["deep:1"])]))
    assert_nothing_left(store)


def test_opaque_whiteout_over_a_deep_kept_tree_works(deep_tmp: Path) -> None:
    root = deep_tmp / "rootfs"
    root.mkdir()
    apply_layer(root, io.BytesIO(tar_bytes({"d/" + "k/" * 1100 + "old": b"1"})))
    apply_layer(root, io.BytesIO(tar_bytes({"d/" + "k/" * 1100 + "new": b"2", "d/.wh..wh..opq": b""})))
    assert sorted(os.listdir(root.joinpath("d", *["k"] * 1100))) == ["new"]


def test_corrupt_gzip_tarball_is_refused(tmp_path: Path) -> None:
    data = gzip.compress(GOOD)
    corrupt = data[:40] + bytes(b ^ 0x55 for b in data[40:200]) + data[200:]
    store = small_store(tmp_path)
    with pytest.raises(ImageLoadError, match=r"^invalid tar: gzip: zlib error: Error -3 while decompressing"):
        load(store, corrupt)
    assert_nothing_left(store)


def test_entry_names_adding_up_beyond_the_limit_are_refused(tmp_path: Path) -> None:
    names = tar_bytes({("x" * 200 + "/") * 4 + f"{n:04d}": b"" for n in range(25)})  # 25 names of 808 bytes
    store = small_store(tmp_path, max_name_bytes=16 * KIB)
    with pytest.raises(ImageTooLarge) as refused:
        load(store, docker_save([([names], ["names:1"])]))
    assert refused.value.message == (
        f"{label(names)}: the names of the image's tar entries add up to more than 16384 bytes"
    )
    assert_nothing_left(store)
