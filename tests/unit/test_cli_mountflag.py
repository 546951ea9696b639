"""`--mount` parsed as the docker CLI 28 parses it (shoal/cli/mountflag.py): the Mount JSON and its messages."""

from __future__ import annotations

import pytest

from shoal.cli.format import UsageError
from shoal.cli.mountflag import parse_mount_flag
from shoal.cli.runflags import adjust


def refused(value: str) -> str:
    with pytest.raises(UsageError) as e:
        parse_mount_flag(value)
    return str(e.value)


def test_a_bind_mount_with_its_options() -> None:
    assert parse_mount_flag("type=bind,src=/a,dst=/x,ro,bind-propagation=rshared") == {
        "Type": "bind", "Source": "/a", "Target": "/x", "ReadOnly": True, "BindOptions": {"Propagation": "rshared"}}


def test_the_type_defaults_to_volume_with_its_options() -> None:
    assert parse_mount_flag("src=v,target=/x,volume-nocopy,volume-label=a=b,volume-driver=local,volume-opt=o=1") == {
        "Type": "volume", "Source": "v", "Target": "/x",
        "VolumeOptions": {"NoCopy": True, "Labels": {"a": "b"}, "DriverConfig": {"Name": "local", "Options": {"o": "1"}}}}


def test_a_tmpfs_mount_with_size_and_octal_mode() -> None:
    assert parse_mount_flag("type=tmpfs,dst=/x,tmpfs-size=64m,tmpfs-mode=1770") == {
        "Type": "tmpfs", "Target": "/x", "TmpfsOptions": {"SizeBytes": 64 * 1024 * 1024, "Mode": 0o1770}}


@pytest.mark.parametrize(("value", "message"), [
    ("foo", "invalid field 'foo' must be a key=value pair"),
    ("type=bind", "target is required"),
    ("type=bind,source=/tmp,target=/x,readonly=maybe", "invalid value for readonly: maybe"),
    ("type=tmpfs,target=/x,tmpfs-size=abc", "invalid value for tmpfs-size: abc"),
    ("target=/x,bogus=1", "unexpected key 'bogus' in 'bogus=1'"),
    ("type=bind,src=/a,dst=/x,volume-nocopy", "cannot mix 'volume-*' options with mount type 'bind'"),
    ("type=volume,dst=/x,tmpfs-size=1m", "cannot mix 'tmpfs-*' options with mount type 'volume'"),
    ("type=volume,dst=/x,bind-propagation=rshared", "cannot mix 'bind-*' options with mount type 'volume'"),
    ("type=tmpfs,dst=/x,tmpfs-mode=99a", "invalid value for tmpfs-mode: 99a"),
    ("type=bind,src=/a,dst=/x,bind-recursive=readonly",
     "option 'bind-recursive=readonly' requires 'bind-propagation=rprivate' to be specified in conjunction"),
])
def test_bad_values_are_refused_with_the_docker_clis_words(value: str, message: str) -> None:
    assert refused(value) == f'invalid argument "{value}" for "--mount" flag: {message}'


def test_volume_tmpfs_and_read_only_flags_fill_the_create_body() -> None:
    body: dict = {}
    adjust({"volume": ("/anon", "/h:/c:ro", "named:/n"), "tmpfs": ("/run:size=1m",), "read_only": True,
            "mount": ("type=tmpfs,dst=/t",)})(body)
    assert body == {"Volumes": {"/anon": {}}, "HostConfig": {
        "Binds": ["/h:/c:ro", "named:/n"], "Tmpfs": {"/run": "size=1m"}, "ReadonlyRootfs": True,
        "Mounts": [{"Type": "tmpfs", "Target": "/t"}]}}
