"""-v / --mount / --tmpfs parsing with Docker's messages, mount destinations resolved inside a
root, tmpfs option merging, the order of mounts in config.json, and archive member checks."""
from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from agent.executor import mounts as oci
from agent.executor.spec import Mount, ProcessSpec, build_oci_spec
from agent.volumes import archive
from agent.volumes.specs import MountSpecError, check_volume_name, parse_all, parse_bind, parse_mount, parse_tmpfs
from shoal.api.create_fields import refuse_unapplied


def _error(fn, *args) -> str:
    with pytest.raises(MountSpecError) as info:
        fn(*args)
    return info.value.message


def test_bind_spec_with_ro_is_a_read_only_bind_with_rprivate_propagation():
    point = parse_bind("/srv/data:/data:ro")
    assert (point.type, point.source, point.destination, point.rw, point.propagation, point.mode) == (
        "bind", "/srv/data", "/data", False, "rprivate", "ro")
    assert point.create_source  # -v creates a missing host directory, as Docker does


def test_named_volume_spec_is_a_volume_that_copies_unless_nocopy():
    assert (parse_bind("vol1:/data").type, parse_bind("vol1:/data").name, parse_bind("vol1:/data").copy_data) == (
        "volume", "vol1", True)
    assert parse_bind("vol1:/data:nocopy").copy_data is False


def test_bind_spec_with_a_relative_target_is_refused_with_dockers_message():
    assert _error(parse_bind, "/a:b") == (
        "invalid volume specification: '/a:b': invalid mount config for type \"bind\": "
        "invalid mount path: 'b' mount path must be absolute")


def test_bind_spec_of_a_destination_and_a_mode_only_is_an_invalid_specification():
    assert _error(parse_bind, "/foo:rw") == "invalid volume specification: '/foo:rw'"


def test_bind_spec_with_an_unknown_mode_is_invalid_mode():
    assert _error(parse_bind, "/a:/b:rx") == "invalid mode: rx"


def test_bind_spec_with_two_rw_modes_is_invalid_mode():
    assert _error(parse_bind, "/a:/b:ro,rw") == "invalid mode: ro,rw"


def test_bind_spec_onto_the_root_is_refused():
    assert _error(parse_bind, "/a:/") == (
        "invalid volume specification: '/a:/': invalid mount config for type \"bind\": "
        "invalid specification: destination can't be '/'")


def test_volume_spec_with_a_propagation_mode_is_refused():
    assert _error(parse_bind, "vol:/b:rshared") == (
        "invalid volume specification: 'vol:/b:rshared': invalid mount config for type \"volume\": "
        "field BindOptions must not be specified")


def test_mount_bind_with_a_relative_target_is_refused_with_dockers_message():
    assert _error(parse_mount, {"Type": "bind", "Source": "/x", "Target": "x"}) == (
        "invalid mount config for type \"bind\": invalid mount path: 'x' mount path must be absolute")


def test_mount_bind_without_source_is_refused():
    assert _error(parse_mount, {"Type": "bind", "Target": "/x"}) == (
        'invalid mount config for type "bind": field Source must not be empty')


def test_mount_of_unknown_type_is_refused():
    assert _error(parse_mount, {"Type": "weird", "Target": "/x"}) == (
        'invalid mount config for type "weird": mount type unknown')


def test_mount_bind_with_a_bad_propagation_is_refused():
    assert _error(parse_mount, {"Type": "bind", "Source": "/x", "Target": "/y",
                                "BindOptions": {"Propagation": "sideways"}}) == (
        'invalid mount config for type "bind": invalid propagation mode: sideways')


def test_mount_tmpfs_with_a_source_is_refused():
    assert _error(parse_mount, {"Type": "tmpfs", "Source": "x", "Target": "/t"}) == (
        'invalid mount config for type "tmpfs": field Source must not be specified')


def test_mount_read_only_anonymous_volume_is_refused():
    assert _error(parse_mount, {"Type": "volume", "Target": "/v", "ReadOnly": True}) == (
        'invalid mount config for type "volume": must not set ReadOnly mode when using anonymous volumes')


def test_mount_tmpfs_size_and_mode_become_dockers_options():
    point = parse_mount({"Type": "tmpfs", "Target": "/t", "TmpfsOptions": {"SizeBytes": 64 << 20, "Mode": 0o1777}})
    assert point.tmpfs_options == "mode=1777,size=64m"


def test_mount_volume_nocopy_and_labels_are_kept():
    point = parse_mount({"Type": "volume", "Source": "v1", "Target": "/v",
                         "VolumeOptions": {"NoCopy": True, "Labels": {"a": "b"}}})
    assert (point.name, point.copy_data, point.volume_labels, point.anonymous) == ("v1", False, {"a": "b"}, False)


def test_tmpfs_option_unknown_to_tmpfs_is_refused_naming_it():
    assert _error(parse_tmpfs, "/run", "size=1m,bogus") == "invalid tmpfs option 'bogus' for /run"


def test_duplicate_mount_point_across_binds_and_mounts_is_refused():
    host_config = {"Binds": ["/a:/x"], "Mounts": [{"Type": "tmpfs", "Target": "/x/"}]}
    assert _error(parse_all, host_config, None, None) == "Duplicate mount point: /x"


def test_anonymous_volumes_of_config_and_image_yield_to_explicit_mounts():
    points = parse_all({"Binds": ["/a:/data"]}, {"/cache": {}}, {"/data": {}, "/logs": {}})
    assert [(p.type, p.destination, p.anonymous) for p in points] == [
        ("bind", "/data", False), ("volume", "/cache", True), ("volume", "/logs", True)]


def test_volume_name_rules_use_the_local_drivers_messages():
    assert _error(check_volume_name, "a") == (
        "volume name is too short, names should be at least two alphanumeric characters")
    assert _error(check_volume_name, "./x").startswith(
        '"./x" includes invalid characters for a local volume name, only "[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed.')


def test_create_fields_pass_binds_mounts_tmpfs_and_volumes_through():
    refuse_unapplied({"Image": "busybox", "Volumes": {"/v": {}},
                      "HostConfig": {"Binds": ["/a:/b"], "Mounts": [{"Type": "tmpfs", "Target": "/t"}],
                                     "Tmpfs": {"/run": ""}}})


# ---- destinations resolved inside the root ---------------------------------------------

def test_destination_through_an_absolute_symlink_resolves_inside_the_root(tmp_path: Path):
    (tmp_path / "etc").mkdir()
    os.symlink("/etc", tmp_path / "evil")
    assert oci.resolve_in_root(tmp_path, "/evil/x") == "/etc/x"


def test_destination_through_a_climbing_symlink_stays_inside_the_root(tmp_path: Path):
    (tmp_path / "a").mkdir()
    os.symlink("../../../../../etc", tmp_path / "a" / "up")
    assert oci.resolve_in_root(tmp_path, "/a/up/shadow") == "/etc/shadow"


def test_destination_that_does_not_exist_is_kept_as_given(tmp_path: Path):
    assert oci.resolve_in_root(tmp_path, "/new/dir/") == "/new/dir"


# ---- config.json -------------------------------------------------------------------------

def test_tmpfs_options_merge_the_users_over_dockers_defaults():
    assert oci.merge_tmpfs_options(["noexec", "nosuid", "nodev", "rprivate", "exec", "size=1m", "size=2m"]) == [
        "nosuid", "nodev", "rprivate", "exec", "size=2m"]


def test_spec_mounts_a_parent_before_its_children_and_the_users_shm_over_the_default():
    mounts = [Mount("/h/hosts", "/etc/hosts"), Mount("/srv", "/etc", readonly=True),
              Mount("tmpfs", "/dev/shm", kind="tmpfs", options=("size=1m",))]
    spec = build_oci_spec(ProcessSpec(args=["true"], env=[]), "h", "/r", None, mounts)
    destinations = [m["destination"] for m in spec["mounts"]]
    assert destinations.index("/etc") < destinations.index("/etc/hosts")
    shm = [m for m in spec["mounts"] if m["destination"] == "/dev/shm"]
    assert shm == [{"destination": "/dev/shm", "type": "tmpfs", "source": "tmpfs",
                    "options": ["noexec", "nosuid", "nodev", "rprivate", "size=1m"]}]
    assert next(m for m in spec["mounts"] if m["destination"] == "/etc")["options"] == ["rbind", "rprivate", "ro"]


# ---- archive members ---------------------------------------------------------------------

def _members(*specs: tuple[str, bytes, str]) -> list[tarfile.TarInfo]:
    out = []
    for name, kind, link in specs:
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, link
        out.append(info)
    return out


def test_archive_member_climbing_out_is_refused():
    with pytest.raises(archive.ArchiveError) as info:
        archive.check_members(_members(("ok", tarfile.REGTYPE, ""), ("../escape", tarfile.REGTYPE, "")))
    assert info.value.message == 'invalid tar member "../escape": it climbs out of the extraction directory with ".."'


def test_archive_member_with_an_absolute_name_is_refused():
    with pytest.raises(archive.ArchiveError) as info:
        archive.check_members(_members(("/etc/passwd", tarfile.REGTYPE, "")))
    assert info.value.message == 'invalid tar member "/etc/passwd": absolute paths are refused'


def test_archive_member_through_a_symlink_of_the_archive_is_refused():
    with pytest.raises(archive.ArchiveError) as info:
        archive.check_members(_members(("l", tarfile.SYMTYPE, "/etc"), ("l/passwd", tarfile.REGTYPE, "")))
    assert info.value.message == 'invalid tar member "l/passwd": its path goes through the symbolic link "l"'


def test_archive_hard_link_to_an_absolute_path_is_refused():
    with pytest.raises(archive.ArchiveError) as info:
        archive.check_members(_members(("h", tarfile.LNKTYPE, "/etc/shadow")))
    assert info.value.message == 'invalid tar member "/etc/shadow": absolute paths are refused'


def test_go_mode_marks_directories_and_symlinks_as_go_does():
    assert archive.go_mode(0o040755) == (1 << 31) | 0o755
    assert archive.go_mode(0o120777) == (1 << 27) | 0o777
    assert archive.go_mode(0o100644) == 0o644


def test_archive_of_a_directory_names_entries_after_its_base(tmp_path: Path):
    (tmp_path / "data" / "sub").mkdir(parents=True)
    (tmp_path / "data" / "sub" / "f").write_bytes(b"x")
    os.symlink("/etc/passwd", tmp_path / "data" / "link")
    out = io.BytesIO()
    info = archive.archive_path(tmp_path, "/data", "c1", out)
    names = tarfile.open(fileobj=io.BytesIO(out.getvalue())).getnames()
    assert (names, info.name, info.mode & (1 << 31) != 0) == (["data", "data/link", "data/sub", "data/sub/f"], "data", True)


def test_paths_are_cleaned_as_go_cleans_them_without_a_double_leading_slash():
    assert parse_bind("//srv//a/:/data/./x/").source == "/srv/a"
    assert parse_bind("/srv:/data/./x/").destination == "/data/x"
    assert parse_bind("/srv://data").destination == "/data"
    assert archive.clean_path("/data") == "/data" and archive.clean_path("data/../..//x/") == "/x"


def test_mount_option_shoal_does_not_apply_is_refused_not_ignored():
    assert _error(parse_mount, {"Type": "bind", "Source": "/x", "Target": "/y",
                                "BindOptions": {"ReadOnlyNonRecursive": True}}) == (
        "shoal does not support Mounts[].BindOptions.ReadOnlyNonRecursive yet (got True)")
    assert _error(parse_mount, {"Type": "volume", "Target": "/y", "ImageOptions": {"Subpath": "a"}}).startswith(
        "shoal does not support Mounts[].ImageOptions yet")


def test_mount_bind_create_mountpoint_makes_the_source_at_start():
    point = parse_mount({"Type": "bind", "Source": "/new", "Target": "/y", "BindOptions": {"CreateMountpoint": True}})
    assert point.create_source is True
