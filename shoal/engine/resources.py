"""The engine's cgroup side: limits at create/start/update, OOM kills at exit, pause, top, stats, orphans.
Uses agent.executor.cgroups and runc; shoal.engine.engine calls it in the lifecycle, shoal.api.routes_resources serves it."""
from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from agent.executor import cgroups as cg
from agent.executor import stats as st
from shoal.engine.errors import Conflict, InvalidParameter, SystemError_

if TYPE_CHECKING:
    from shoal.engine.engine import Engine
    from shoal.engine.records import ContainerRecord

log = logging.getLogger(__name__)

PS_DEADLINE = 10.0


def resources_of(container: ContainerRecord) -> cg.Resources:
    """The limits a container's record holds (its HostConfig, as created or updated)."""
    try:
        return cg.from_host_config(container.host_config)
    except cg.ResourceError:  # checked at create: a record that fails here was edited by hand
        return cg.Resources()


def not_running(container: ContainerRecord) -> Conflict:
    return Conflict(f"Container {container.id} is not running")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


async def _run(argv: list[str], stdin: bytes | None = None, timeout: float = 30.0) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise SystemError_(f"{argv[0]} did not answer within {timeout:.0f}s") from None
    return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")


def _runc_message(text: str) -> str:
    """runc's error text: its last line, without the `time=… level=error msg=` decoration."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    if 'msg="' in last:
        last = last.split('msg="', 1)[1].rsplit('"', 1)[0]
    return last


class ContainerResources:
    def __init__(self, engine: Engine, cgroups: cg.Cgroups | None = None) -> None:
        self.engine = engine
        self.cgroups = cgroups or cg.Cgroups()
        self.host = cg.host_limits(self.cgroups.root)
        # Docker's default cgroupns mode: private on a v2 host, the host's on v1.
        self.private_cgroupns = self.cgroups.version == "2"

    # ---- create / start -------------------------------------------------------------
    def path(self, container_id: str) -> str:
        return cg.cgroups_path(self.engine.daemon_id, container_id)

    def check_create(self, host_config: dict[str, Any]) -> list[str]:
        """Docker's checks of the create's limits (400 with Docker's text, before anything is
        made); writes Docker's defaults (MemorySwap = 2 × Memory) into host_config."""
        try:
            res = cg.from_host_config(host_config)
            warnings = cg.validate(res, self.host)
        except cg.ResourceError as exc:
            raise InvalidParameter(exc.message) from None
        adapted = cg.with_defaults(res)
        if adapted.memory_swap != res.memory_swap:
            host_config["MemorySwap"] = adapted.memory_swap
        return warnings

    def oci(self, container: ContainerRecord) -> dict[str, Any]:
        return cg.oci_resources(resources_of(container))

    # ---- exit -----------------------------------------------------------------------
    def read_oom_killed(self, container: ContainerRecord) -> None:
        """Sets OOMKilled from the OOM killer's count while the cgroup is still there (the
        stopped runc container keeps it); synchronous, so it lands with the exit itself."""
        try:
            container.oom_killed = self.cgroups.oom_kills(self.path(container.id)) > 0
        except OSError as exc:
            log.warning("container %s: cannot read its OOM counter: %s", container.id[:12], exc)

    async def at_exit(self, container: ContainerRecord) -> None:
        """Deletes the stopped runc container and with it the cgroup (read_oom_killed first)."""
        await self.delete_stopped(container.id)

    async def delete_stopped(self, container_id: str) -> None:
        runtime = self.engine.runtime
        if not (runtime.runc_root / container_id).exists():
            return
        code, _, err = await _run([runtime.runc, "--root", str(runtime.runc_root), "delete", container_id])
        if code != 0 and "does not exist" not in err:
            log.warning("container %s: runc delete after exit failed: %s", container_id[:12], _runc_message(err))

    def remove_orphans(self, keep: set[str]) -> None:
        """Cgroups under this daemon's parent whose container has no record (a crash between
        runc and the record); ones that still hold a process are left (runc's reconcile owns those)."""
        removed = self.cgroups.remove_orphans(self.engine.daemon_id, keep)
        if removed:
            log.info("removed orphan cgroups of containers %s", ", ".join(r[:12] for r in removed))

    # ---- pause / unpause ------------------------------------------------------------
    async def _runc(self, *args: str, stdin: bytes | None = None) -> None:
        runtime = self.engine.runtime
        code, _, err = await _run([runtime.runc, "--root", str(runtime.runc_root), *args], stdin)
        if code != 0:
            raise SystemError_(_runc_message(err) or f"runc {args[0]} failed")

    async def pause(self, ref: str) -> None:
        container = self.engine.get_container(ref)
        async with self.engine._lock(container.id):
            if container.state != "running":
                raise not_running(container)
            if container.paused:
                raise Conflict(f"Container {container.id} is already paused")
            await self._runc("pause", container.id)
            container.paused = True
            self.engine._save_quietly(container)
            self.engine.emit_container(container, "pause")

    async def unpause(self, ref: str) -> None:
        container = self.engine.get_container(ref)
        async with self.engine._lock(container.id):
            if not container.paused or container.state != "running":
                raise Conflict(f"Container {container.id} is not paused")
            await self.resume(container)
            self.engine.emit_container(container, "unpause")

    async def resume(self, container: ContainerRecord) -> None:
        """Thaws a paused container (also before a stop or kill, as Docker does)."""
        await self._runc("resume", container.id)
        container.paused = False
        self.engine._save_quietly(container)

    # ---- update ---------------------------------------------------------------------
    async def update(self, ref: str, body: dict[str, Any]) -> list[str]:
        """POST /containers/{id}/update: the body's non-zero limits replace the container's,
        applied at once with `runc update` when it runs, kept for its next start otherwise."""
        container = self.engine.get_container(ref)
        try:
            change = cg.from_host_config(body)
            warnings = cg.validate(change, self.host, update=True)
            merged = cg.merge_update(resources_of(container), change)
            cg.validate(merged, self.host, update=True)
        except cg.ResourceError as exc:
            raise InvalidParameter(f"Cannot update container {container.id}: {exc.message}") from None
        async with self.engine._lock(container.id):
            if container.state == "running":
                try:
                    await self._runc("update", "-r", "-", container.id,
                                     stdin=json.dumps(cg.oci_resources(merged)).encode())
                except SystemError_ as exc:
                    raise SystemError_(f"Cannot update container {container.id}: {exc.message}") from None
            container.host_config.update(cg.to_host_config(merged))
            self.engine._save(container)
        return warnings

    # ---- top ------------------------------------------------------------------------
    async def top(self, ref: str, ps_args: str) -> dict[str, Any]:
        container = self.engine.get_container(ref)
        if container.state != "running":
            raise not_running(container)
        pids = set(self.cgroups.procs(self.path(container.id)))
        args = ps_args.split() if ps_args.strip() else ["-ef"]
        code, out, err = await _run(["ps", *args], timeout=PS_DEADLINE)
        if code != 0:
            raise SystemError_(f"Error running ps: exit status {code}: {err.strip()}")
        return parse_ps(out, pids)

    # ---- stats ----------------------------------------------------------------------
    def reading(self, container: ContainerRecord) -> st.Reading | None:
        """One stats reading, None when the container does not run."""
        if container.state != "running":
            return None
        system_cpu, cpus = st.read_host()
        return st.Reading(
            read=_now(),
            sample=self.cgroups.sample(self.path(container.id)),
            system_cpu=system_cpu,
            online_cpus=cpus,
            networks=st.read_networks(container.pid) if container.netns else {},
        )


def parse_ps(output: str, pids: set[int]) -> dict[str, Any]:
    """moby's parsePSOutput: titles from the first line, the rows whose PID is in pids, extra
    fields joined into the last column (the command)."""
    lines = output.splitlines()
    if not lines:
        raise SystemError_("Couldn't find PID field in ps output")
    titles = lines[0].split()
    if "PID" not in titles:
        raise SystemError_("Couldn't find PID field in ps output")
    index = titles.index("PID")
    processes = []
    for line in lines[1:]:
        if not line.strip():
            continue
        fields = line.split()
        try:
            pid = int(fields[index])
        except (ValueError, IndexError):
            continue
        if pid not in pids:
            continue
        row = fields[: len(titles) - 1] + [" ".join(fields[len(titles) - 1:])]
        processes.append(row)
    return {"Titles": titles, "Processes": processes}
