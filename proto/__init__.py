"""The one schema of shoal: protobuf messages for objects, the wire and the store.

`*.proto` sources live here beside their generated `*_pb2.py` modules (committed; regenerate
with `python -m proto.generate`; tests/unit/test_proto_fresh.py fails when they are stale).
"""
