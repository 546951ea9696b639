"""`shoal daemon`: one per host; runs the engine and serves the local Docker API on a socket.

Composes shoal.engine (networks, containers, images) and shoal.api (HTTP); the manager and
agent roles of a swarm join here in later issues. Containers outlive the daemon (live restore).
"""
from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import resource
import signal
from pathlib import Path

from common.heap import freeze_long_lived

log = logging.getLogger("shoal.daemon")


class DaemonAlreadyRunning(SystemExit):
    pass


def _lock_data_dir(data_dir: Path) -> int:
    """One daemon per data dir: a second one would fight over the same kernel objects."""
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / "shoal.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise DaemonAlreadyRunning(f"another shoal daemon is using {data_dir}") from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


async def _serve(host: str, data_dir: Path, exec_root: Path, netns_prefix: str, bip: str | None, mtu: int | None,
                 dns: list[str], image_limits: tuple[int, int] | None = None,
                 manager_config: Path | None = None, metrics_addr: str = "") -> None:
    from agent.images.busybox import ensure_busybox
    from agent.images.store import LoadLimits
    from shoal.api.server import serve
    from shoal.engine.engine import Engine, EngineOptions

    exec_root.mkdir(parents=True, exist_ok=True)
    options = EngineOptions(
        data_dir=data_dir,
        exec_root=exec_root,
        netns_prefix=netns_prefix,
        bip=bip or "172.17.0.1/16",
        mtu=mtu or 1500,
        dns=dns,
    )
    engine = Engine(options)
    await engine.restore()
    ensure_busybox(engine.images)
    if image_limits is not None:  # --max-image-size, --max-image-entries: for loads through the API,
        # not for the built-in busybox image (a low limit must not stop the daemon from starting)
        engine.images.limits = LoadLimits(max_bytes=image_limits[0], max_entries=image_limits[1])
    close_metrics = await _serve_metrics(metrics_addr) if metrics_addr else None
    manager = await _start_manager(manager_config, data_dir) if manager_config is not None else None
    # The swarm comes back before the API is served, as dockerd waits for its cluster before serving: a restarted
    # manager answering /_ping while its manager still starts would refuse the control API as a worker's meanwhile.
    # restore() does not wait for a quorum (a manager without one still serves and says so), so this is bounded.
    swarm = await _start_swarm(engine, data_dir)
    server = await serve(engine, host)
    log.info("shoal daemon ready on %s (data dir %s)", host, data_dir)
    freeze_long_lived()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    daemon_pid = os.getpid()

    def on_signal(signum: int, frame: object) -> None:
        # pyroute2 forks helpers that it later SIGTERMs. loop.add_signal_handler would give
        # them our wakeup fd, and their SIGTERM would stop the daemon: so a plain handler,
        # acting only in the daemon process itself.
        if os.getpid() == daemon_pid:
            loop.call_soon_threadsafe(stop.set)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    await stop.wait()
    log.info("shoal daemon stopping; containers keep running")
    await swarm.close()
    if manager is not None:
        await manager.stop()
    if close_metrics is not None:
        await close_metrics()
    await server.close()
    await engine.close()


async def _start_swarm(engine, data_dir: Path):  # type: ignore[no-untyped-def]
    """The node's swarm side (shoal/swarm): resumes the swarm it was in; the local API's /swarm routes use it."""
    from shoal.swarm.hooks import node_hostname, on_joined
    from shoal.swarm.node import SwarmNode

    swarm = SwarmNode(data_dir, lambda: node_hostname(engine), engine.version, lambda: on_joined(engine), engine=engine)
    engine.swarm = swarm
    await swarm.restore()
    return swarm


def raise_nofile_limit() -> tuple[int, int]:
    """Soft RLIMIT_NOFILE up to the hard limit (as dockerd and containerd do at start): every
    container costs the daemon descriptors (DNS sockets, pipes). Returns (old soft, new soft)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:  # the kernel's ceiling for one process
        try:
            target = int(Path("/proc/sys/fs/nr_open").read_text())
        except (OSError, ValueError):
            target = 1048576
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-files limit from %d to %d: %s", soft, target, exc)
            return soft, soft
    return soft, max(soft, target)


async def _start_manager(config: Path, data_dir: Path):  # type: ignore[no-untyped-def]
    """The manager role (manager/node.py), when a manager config is given: raft, store, control API."""
    from manager.node import ManagerNode, config_from_file

    try:
        node = ManagerNode(config_from_file(config, data_dir / "manager"))
        await node.start()
    except Exception as e:  # a bad config, a wiped member, a taken port: the node still serves its containers
        log.error("manager not started: %s", e)
        return None
    log.info("manager %d serving on %s", node.cfg.node_id, node.cfg.listen)
    return node


async def _serve_metrics(addr: str):  # type: ignore[no-untyped-def]
    """--metrics-addr: Prometheus metrics (manager/metrics.py) on HOST:PORT; a bad or taken address stops
    the daemon at start, as dockerd does."""
    from manager.metrics import serve_metrics

    try:
        return await serve_metrics(addr)
    except (ValueError, OSError) as e:
        raise SystemExit(f"shoal daemon: {e}") from None


def run_daemon(
    host: str = "unix:///run/shoal/shoal.sock",
    data_dir: Path = Path("/var/lib/shoal"),
    exec_root: Path = Path("/run/shoal"),
    netns_prefix: str = "shoal-",
    bip: str | None = None,
    mtu: int | None = None,
    dns: list[str] | None = None,
    debug: bool = False,
    image_limits: tuple[int, int] | None = None,
    manager_config: Path | None = None,
    metrics_addr: str = "",
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    data_dir = Path(data_dir)
    old, new = raise_nofile_limit()
    log.info("open-files limit %d (was %d)", new, old)
    lock_fd = _lock_data_dir(data_dir)
    try:
        asyncio.run(_serve(host, data_dir, Path(exec_root), netns_prefix, bip, mtu, list(dns or []), image_limits,
                           manager_config, metrics_addr))
    finally:
        os.close(lock_fd)
