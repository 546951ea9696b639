"""The committed generated protobuf modules match what the .proto sources produce now."""
from pathlib import Path

from proto.generate import PROTO_DIR, generate, proto_sources


def test_every_proto_source_has_a_committed_module(tmp_path: Path) -> None:
    for source in proto_sources():
        assert (PROTO_DIR / f"{source.stem}_pb2.py").exists(), source.name


def test_generated_modules_are_not_stale(tmp_path: Path) -> None:
    fresh = generate(tmp_path)
    assert fresh, "protoc produced nothing"
    for path in fresh:
        committed = PROTO_DIR / path.name
        assert committed.exists(), f"{path.name} is not committed: run python -m proto.generate"
        assert committed.read_bytes() == path.read_bytes(), (
            f"{path.name} is stale: run python -m proto.generate"
        )
