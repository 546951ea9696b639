"""Measurement: a gzip bomb (a ~2 MB layer of N GiB of zeros, split over 32 entries so that no
header claims much) loaded into an image store with a lower --max-image-size.

Prints the outcome, the time to refusal, the peak RSS and what is left on disk.
Usage: python bench/image_bomb.py [--expand-gib 2] [--limit-gib 1] [--dir /var/tmp]
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import resource
import shutil
import sys
import tarfile
import tempfile
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.images.store import ImageStore, LoadLimits  # noqa: E402

_MIB = 1 << 20


def bomb_layer(size: int, entries: int = 32) -> bytes:
    """A gzip'd layer tar of `entries` files of zeros, `size` bytes in all, built in memory."""
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = []
    zeros = bytes(_MIB)
    for n in range(entries):
        info = tarfile.TarInfo(f"zeros{n}")
        info.size = size // entries
        out.append(comp.compress(info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "surrogateescape")))
        for _ in range(info.size // _MIB):
            out.append(comp.compress(zeros))
    out.append(comp.compress(bytes(1024)))
    out.append(comp.flush())
    return b"".join(out)


def docker_save(layer: bytes) -> bytes:
    config = json.dumps({"os": "linux", "architecture": "amd64",
                         "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "0" * 64]}}).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = [{"Config": config_name, "RepoTags": ["bomb:1"], "Layers": ["l/layer.tar"]}]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in ((config_name, config), ("l/layer.tar", layer), ("manifest.json", json.dumps(manifest).encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--expand-gib", type=float, default=2.0)
    parser.add_argument("--limit-gib", type=float, default=1.0)
    parser.add_argument("--dir", default="/var/tmp", help="where the store goes (a real disk, not tmpfs)")
    args = parser.parse_args()
    data = docker_save(bomb_layer(int(args.expand_gib * (1 << 30))))
    work = Path(tempfile.mkdtemp(prefix="image-bomb-", dir=args.dir))
    try:
        store = ImageStore(work / "images", LoadLimits(max_bytes=int(args.limit_gib * (1 << 30))))
        start = time.monotonic()
        try:
            store.load(io.BytesIO(data))
            outcome = "loaded"
        except Exception as exc:  # noqa: BLE001 - the outcome is what is measured
            outcome = f"{type(exc).__name__}: {exc}"
        elapsed = time.monotonic() - start
        left = sorted(str(p.relative_to(work / "images")) for p in (work / "images").rglob("*"))
        print(outcome)
        print(f"tarball {len(data) / 1e6:.2f} MB expanding to {args.expand_gib:g} GiB, limit {args.limit_gib:g} GiB: "
              f"{elapsed:.1f} s, peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB, "
              f"left in the store: {left}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
