"""Build the lab's `busybox:latest` image (a `docker save` tarball) from Debian's static busybox.

No registry is reachable, so the daemon makes this image itself and loads it into agent.images.store.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from agent.images.store import Image, ImageNotFound, ImageStore, host_architecture

TAG = "busybox:latest"
# Fixed times make the layer, the config and so the image id the same on every build.
FIXED_MTIME = 1704067200  # 2024-01-01T00:00:00Z
CREATED = "2024-01-01T00:00:00Z"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CANDIDATES = (Path("/bin/busybox"), Path("/usr/bin/busybox"))

PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = "root:x:0:\nnobody:x:65534:\n"
DIRS = {
    "bin": 0o755, "dev": 0o755, "etc": 0o755, "home": 0o755, "proc": 0o555, "root": 0o700,
    "sbin": 0o755, "sys": 0o555, "tmp": 0o1777, "usr": 0o755, "usr/bin": 0o755,
    "usr/sbin": 0o755, "var": 0o755, "var/tmp": 0o1777,
}


def find_busybox() -> Path:
    for path in CANDIDATES:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    raise FileNotFoundError("busybox not found at /bin/busybox or /usr/bin/busybox (install busybox-static)")


def applet_paths(busybox: Path) -> list[str]:
    """Where busybox's own install would put each applet ("bin/sh", "usr/bin/awk", ...)."""
    out = subprocess.run([str(busybox), "--list-full"], capture_output=True, text=True)
    if out.returncode == 0 and out.stdout.strip():
        paths = [p.strip() for p in out.stdout.splitlines()]
    else:  # a build without --list-full: everything in /bin is enough with PATH covering it
        listed = subprocess.run([str(busybox), "--list"], capture_output=True, text=True, check=True)
        paths = [f"bin/{name.strip()}" for name in listed.stdout.splitlines()]
    return sorted(
        {p for p in paths if p and "/" in p and os.path.dirname(p) in DIRS and p != "bin/busybox"}
    )


def _info(name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = FIXED_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def build_layer(busybox: Path) -> bytes:
    """The single layer's uncompressed tar bytes, entries sorted so the bytes never vary."""
    entries: dict[str, tuple[tarfile.TarInfo, bytes | None]] = {}
    for name, mode in DIRS.items():
        entries[name] = (_info(name, tarfile.DIRTYPE, mode), None)
    binary = busybox.read_bytes()
    entries["bin/busybox"] = (_info("bin/busybox", tarfile.REGTYPE, 0o755), binary)
    for name, text in (("etc/passwd", PASSWD), ("etc/group", GROUP)):
        entries[name] = (_info(name, tarfile.REGTYPE, 0o644), text.encode())
    for path in applet_paths(busybox):
        link = _info(path, tarfile.SYMTYPE, 0o777)
        link.linkname = os.path.relpath("bin/busybox", os.path.dirname(path))
        entries[path] = (link, None)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(entries):
            info, data = entries[name]
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return buf.getvalue()


def build_config(diff_id: str) -> bytes:
    config = {
        "architecture": host_architecture(),
        "os": "linux",
        "created": CREATED,
        "config": {"Env": [PATH_ENV], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": CREATED, "created_by": "shoal: Debian busybox-static"}],
    }
    return json.dumps(config, sort_keys=True, separators=(",", ":")).encode()


def build_busybox_tar(out: Path, busybox: Path | None = None) -> Path:
    """Write a `docker save` tarball of busybox:latest to `out`; the same binary gives the same id."""
    layer = build_layer(busybox or find_busybox())
    layer_hex = hashlib.sha256(layer).hexdigest()
    config = build_config("sha256:" + layer_hex)
    config_hex = hashlib.sha256(config).hexdigest()
    manifest = [{"Config": f"{config_hex}.json", "RepoTags": [TAG], "Layers": [f"{layer_hex}/layer.tar"]}]
    files = {
        f"{config_hex}.json": config,
        f"{layer_hex}/layer.tar": layer,
        "manifest.json": json.dumps(manifest, separators=(",", ":")).encode(),
        "repositories": json.dumps({"busybox": {"latest": layer_hex}}, separators=(",", ":")).encode(),
    }
    out = Path(out)
    with tarfile.open(out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(_info(layer_hex, tarfile.DIRTYPE, 0o755))
        for name in sorted(files):
            info = _info(name, tarfile.REGTYPE, 0o644)
            info.size = len(files[name])
            tar.addfile(info, io.BytesIO(files[name]))
    return out


def ensure_busybox(store: ImageStore) -> Image:
    """Return busybox:latest, building and loading it first when the store lacks it."""
    try:
        return store.get(TAG)
    except ImageNotFound:
        pass
    with tempfile.TemporaryDirectory(prefix="shoal-busybox-") as tmp:
        tarball = build_busybox_tar(Path(tmp) / "busybox.tar")
        with open(tarball, "rb") as f:
            store.load(f)
    return store.get(TAG)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agent.images.busybox", description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="where to write the tarball (load it with `docker load -i`)")
    parser.add_argument("--busybox", type=Path, default=None, help="static busybox binary to use")
    args = parser.parse_args(argv)
    out = build_busybox_tar(args.out, args.busybox)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
