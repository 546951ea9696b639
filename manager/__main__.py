"""Runs one manager process: `python -m manager run --id N --listen ADDR --peers 1=ADDR,... --data-dir DIR [--join | --force-new-cluster]`.
A ManagerNode (manager/node.py): raft, store and control API on one gRPC server; tests/support/cluster.py starts N of these."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from manager.frontends import FrontendError
from manager.node import ManagerNode
from manager.raft.forcenew import ForceNewClusterError
from manager.raftnode import AlreadyBootstrapped, ManagerConfig
from manager.transport import TLSFiles


def parse_peers(text: str) -> dict[int, str]:
    peers: dict[int, str] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        nid, sep, addr = item.partition("=")
        if not sep or not nid.isdigit() or int(nid) <= 0 or ":" not in addr:
            raise argparse.ArgumentTypeError(f"invalid peer {item!r}: expected ID=HOST:PORT with a positive ID")
        peers[int(nid)] = addr
    return peers


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m manager")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run one manager")
    r.add_argument("--id", type=int, required=True)
    r.add_argument("--listen", required=True, help="HOST:PORT for raft and the control API")
    r.add_argument("--peers", type=parse_peers, default={}, help="ID=HOST:PORT,... every founding member (self included)")
    r.add_argument("--data-dir", type=Path, required=True)
    r.add_argument("--join", action="store_true", help="start empty; the leader adds this node and sends a snapshot")
    r.add_argument("--force-new-cluster", action="store_true",
                   help="start from this member's data as a one-member cluster: uncommitted entries are dropped and every "
                        "other member is removed (add managers back under new ids with --join)")
    r.add_argument("--tick-ms", type=int, default=100)
    r.add_argument("--election-ticks", type=int, default=10)
    r.add_argument("--snapshot-every", type=int, default=10_000)
    r.add_argument("--snapshot-keep", type=int, default=500)
    r.add_argument("--storage", choices=["sqlite", "memory"], default="sqlite")
    r.add_argument("--tls-ca", type=Path)
    r.add_argument("--tls-cert", type=Path)
    r.add_argument("--tls-key", type=Path)
    r.add_argument("--client-listen", default="", metavar="HOST:PORT",
                   help="also serve the control API here, from --frontends processes of their own that hand calls to "
                        "this one over a unix socket (the raft process then spends no time on gRPC for clients)")
    r.add_argument("--frontends", type=int, default=1, help="control API front-end processes on --client-listen")
    r.add_argument("--max-uncommitted-bytes", type=int, default=0,
                   help="the leader holds new proposals while its uncommitted ones hold this many bytes "
                        "(0: one batch in flight; -1: no cap)")
    r.add_argument("--log-level", default="WARNING")
    r.add_argument("--metrics-addr", default="", metavar="HOST:PORT", help="serve Prometheus metrics at http://HOST:PORT/metrics")
    r.add_argument("--event-loop", choices=["asyncio", "uvloop"], default="asyncio",
                   help="uvloop: libuv's event loop (needs the uvloop package; not a dependency)")
    return p


def config_from_args(a: argparse.Namespace) -> ManagerConfig:
    if a.id <= 0:
        raise SystemExit(f"invalid --id {a.id}: must be positive")
    peers = dict(a.peers)
    peers.setdefault(a.id, a.listen)
    tls_paths = (a.tls_ca, a.tls_cert, a.tls_key)
    if a.frontends < 1:
        raise SystemExit(f"invalid --frontends {a.frontends}: must be at least 1")
    if a.client_listen and ":" not in a.client_listen:
        raise SystemExit(f"invalid --client-listen {a.client_listen!r}: expected HOST:PORT")
    if a.force_new_cluster and (a.join or a.storage != "sqlite"):
        raise SystemExit("--force-new-cluster starts from this member's raft data: it needs --storage sqlite and no --join")
    if any(tls_paths) and not all(tls_paths):
        raise SystemExit("mutual TLS needs all of --tls-ca, --tls-cert and --tls-key")
    return ManagerConfig(
        node_id=a.id,
        listen=a.listen,
        peers=peers,
        data_dir=a.data_dir,
        join=a.join,
        force_new_cluster=a.force_new_cluster,
        tick_s=a.tick_ms / 1000,
        election_tick=a.election_ticks,
        snapshot_every=a.snapshot_every,
        snapshot_keep=a.snapshot_keep,
        storage=a.storage,
        tls=TLSFiles(a.tls_ca, a.tls_cert, a.tls_key) if all(tls_paths) else None,
        max_uncommitted_bytes=a.max_uncommitted_bytes,
        client_listen=a.client_listen,
        frontends=a.frontends,
        event_loop=a.event_loop,
    )


async def serve(cfg: ManagerConfig, metrics_addr: str = "") -> int:
    close_metrics = None
    if metrics_addr:
        from manager.metrics import serve_metrics

        try:
            close_metrics = await serve_metrics(metrics_addr)
        except (ValueError, OSError) as e:
            print(f"manager {cfg.node_id}: {e}", file=sys.stderr)
            return 1
    node = ManagerNode(cfg)
    try:
        await node.start()
    except (AlreadyBootstrapped, FrontendError, ForceNewClusterError) as e:
        print(f"manager {cfg.node_id}: {e}", file=sys.stderr)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    failed = asyncio.create_task(node.wait_stopped())
    await asyncio.wait([asyncio.create_task(stop.wait()), failed], return_when=asyncio.FIRST_COMPLETED)
    await node.stop()
    if close_metrics is not None:
        await close_metrics()
    if node.raft.failure is not None:
        print(f"manager {cfg.node_id} stopped: {node.raft.failure}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format=f"%(asctime)s m{args.id} %(levelname)s %(name)s: %(message)s")
    cfg = config_from_args(args)
    if args.event_loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            raise SystemExit("--event-loop uvloop: the uvloop package is not installed (pip install uvloop)") from None
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())  # Python 3.11: asyncio.run has no loop_factory
    return asyncio.run(serve(cfg, args.metrics_addr))


if __name__ == "__main__":
    sys.exit(main())
