"""nftables batches run inside one network namespace through libnftables (no process per change).
Used by agent.network.lb (VIP tables in sandboxes) and agent.network.mesh (the ingress sandbox).

A libnftables context opens its netlink socket when it is made, and a socket keeps the namespace
it was created in (DESIGN §10): made once on a thread switched into the namespace, the context
then programs that namespace from any thread, and keeps nft's cache between batches, so a
small batch costs about a millisecond however big the table is (bench/lb.py).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import threading
from pathlib import Path

from agent.network.nsthread import entered

_NFT_CTX_DEFAULT = 0


class NftError(RuntimeError):
    """nft refused a batch (nothing of it was applied: a batch is one transaction)."""


def _load() -> ctypes.CDLL:
    name = ctypes.util.find_library("nftables") or "libnftables.so.1"
    try:
        lib = ctypes.CDLL(name)
    except OSError as exc:
        raise NftError(f"libnftables is not installed ({exc}): install the nftables package "
                       f"(scripts/install.sh does)") from None
    lib.nft_ctx_new.restype = ctypes.c_void_p
    lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
    lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
    lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
    lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
    lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
    lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    return lib


_lib: ctypes.CDLL | None = None
_lib_lock = threading.Lock()


def _library() -> ctypes.CDLL:
    global _lib
    with _lib_lock:
        if _lib is None:
            _lib = _load()
        return _lib


class NftContext:
    """nft commands in the namespace at `netns_path` (None: the calling thread's own namespace)."""

    def __init__(self, netns_path: str | Path | None = None) -> None:
        self._lib = _library()
        self._lock = threading.Lock()
        self.netns_path = str(netns_path) if netns_path is not None else None
        if netns_path is None:
            ctx = self._lib.nft_ctx_new(_NFT_CTX_DEFAULT)
        else:
            with entered(netns_path):
                ctx = self._lib.nft_ctx_new(_NFT_CTX_DEFAULT)
        if not ctx:
            raise NftError(f"cannot make an nftables context in {self.netns_path or 'this namespace'}")
        self._ctx: int | None = ctx
        self._lib.nft_ctx_buffer_output(ctx)
        self._lib.nft_ctx_buffer_error(ctx)

    def run(self, script: str) -> str:
        """Run `script` (nft -f syntax) as one transaction; its output. NftError with nft's message."""
        with self._lock:
            if self._ctx is None:
                raise NftError("nftables context is closed")
            rc = self._lib.nft_run_cmd_from_buffer(self._ctx, script.encode())
            out = (self._lib.nft_ctx_get_output_buffer(self._ctx) or b"").decode(errors="replace")
            if rc != 0:
                err = (self._lib.nft_ctx_get_error_buffer(self._ctx) or b"").decode(errors="replace")
                where = self.netns_path or "this namespace"
                raise NftError(f"nft in {where}: {err.strip() or f'failed with status {rc}'}")
            return out

    def close(self) -> None:
        with self._lock:
            if self._ctx is not None:
                self._lib.nft_ctx_free(self._ctx)
                self._ctx = None

    def __enter__(self) -> NftContext:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
