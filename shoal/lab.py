"""The multi-host test lab: "hosts" are network namespaces on a lab switch, each running a daemon.

Used by `shoal lab` (shoal.cli.labcmd), tests/lab/conftest.py and people; drives `ip`, `nsenter`
and `runc` as subprocesses and pings each daemon through shoal.client.

Layout of lab LAB (every name derives from LAB, so `down` needs no state to clean up):
  netns shoal-LAB-sw    bridge br0 (up, no address), port hK per host
  netns shoal-LAB-hK    eth0 = 192.168.200.(10+K)/24, peer of hK; daemon with container netns
                        prefix shoal-LAB-hK-
  /run/shoal-lab/LAB    a tmpfs (nosuid, nodev, 20% of memory), as /run is on a host booted by systemd: the
                        daemons' exec roots (bundles, runc state, the containers' /etc files) are what a real
                        host keeps in memory, whatever the machine running the lab has at /run
  /run/shoal-lab/LAB/hK socket shoal.sock, daemon.pid, daemon.log, runc root runc/, uts (a bind
                        mount of the host's UTS namespace: its hostname is hK)
  /var/lib/shoal-lab/LAB/hK   the daemon's data dir
  nft table `bridge shoal_lab` in the switch netns: the faults (partitions, loss) on the switch
"""
from __future__ import annotations

import ctypes
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from shoal.client import Client

RUN_ROOT = Path("/run/shoal-lab")
DATA_ROOT = Path("/var/lib/shoal-lab")
NETNS_DIR = Path("/run/netns")
SUBNET = "192.168.200.0/24"
MAX_HOSTS = 200  # addresses .11 .. .210
PING_DEADLINE_S = 30.0
STOP_DEADLINE_S = 10.0
DAEMON_CMD_ENV = "SHOAL_LAB_DAEMON_CMD"  # replaces `python -m shoal` (tests, debugging)
_NAME = re.compile(r"^[A-Za-z0-9_]{1,12}$")
_MNT_DETACH = 2
_MS_NOSUID, _MS_NODEV = 0x2, 0x4
RUN_TMPFS_OPTIONS = "mode=0755,size=20%"  # systemd's /run: mode 755, 20% of memory

T = TypeVar("T")

# Daemons this process started: reaped on stop so they do not linger as zombies.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class LabError(Exception):
    """A lab operation failed; the message says which lab, host and why."""


class LabCommandError(subprocess.CalledProcessError):
    """Lab.exec(check=True) of a command that failed; str() includes its output."""

    def __str__(self) -> str:
        text = super().__str__()
        for label, data in (("stdout", self.stdout), ("stderr", self.stderr)):
            if data:
                text += f"\n{label}: {str(data).strip()[-2000:]}"
        return text


@dataclass(slots=True)
class HostStatus:
    host: str
    netns: str
    address: str
    socket: Path
    pid: int | None
    running: bool
    answers: bool


# ---- names (pure) ---------------------------------------------------------------------
def validate_name(name: str) -> str:
    """Lab names become parts of netns names; '-' is refused because it separates them."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise LabError(f"invalid lab name {name!r}: use 1-12 letters, digits or '_'")
    return name


def host_names(count: int) -> list[str]:
    return [f"h{i}" for i in range(1, count + 1)]


def host_index(host: str) -> int:
    if not re.fullmatch(r"h[1-9][0-9]*", host):
        raise LabError(f"invalid lab host {host!r}: expected h1, h2, ...")
    return int(host[1:])


def switch_netns(lab: str) -> str:
    return f"shoal-{lab}-sw"


def host_netns(lab: str, host: str) -> str:
    return f"shoal-{lab}-{host}"


def host_address(host: str) -> str:
    return f"192.168.200.{10 + host_index(host)}"


def run_dir(lab: str, host: str | None = None) -> Path:
    return RUN_ROOT / lab / host if host else RUN_ROOT / lab


def data_dir(lab: str, host: str | None = None) -> Path:
    return DATA_ROOT / lab / host if host else DATA_ROOT / lab


def socket_path(lab: str, host: str) -> Path:
    return run_dir(lab, host) / "shoal.sock"


def uts_path(lab: str, host: str) -> Path:
    """The host's UTS namespace, kept by a bind mount (so `hostname` and the daemon's /info say hK)."""
    return run_dir(lab, host) / "uts"


def daemon_argv(lab: str, host: str, environ: dict[str, str] | os._Environ[str] = os.environ) -> list[str]:
    """The daemon's command line; $SHOAL_LAB_DAEMON_CMD may replace `python -m shoal`."""
    override = environ.get(DAEMON_CMD_ENV, "")
    program = shlex.split(override) if override else [sys.executable, "-m", "shoal"]
    return [*program, "daemon",
            "--host", f"unix://{socket_path(lab, host)}",
            "--data-dir", str(data_dir(lab, host)),
            "--exec-root", str(run_dir(lab, host)),
            "--netns-prefix", f"{host_netns(lab, host)}-"]


def launch_argv(lab: str, host: str, environ: dict[str, str] | os._Environ[str] = os.environ) -> list[str]:
    """How the daemon is started: in the host's network namespace, in the root mount namespace.

    `nsenter --net` rather than `ip netns exec`: the latter also unshares the mount namespace,
    which would hide the namespaces (/run/netns bind mounts) and mounts the daemon makes from
    everyone else, `ip netns exec` and `lab down` included.
    """
    return ["nsenter", f"--net={NETNS_DIR / host_netns(lab, host)}", *_uts_option(lab, host), "--",
            *daemon_argv(lab, host, environ)]


def _uts_option(lab: str, host: str) -> list[str]:
    """`--uts=PATH` where the host has its own UTS namespace (labs made before it had none)."""
    path = uts_path(lab, host)
    return [f"--uts={path}"] if path.exists() else []


# ---- small system helpers -------------------------------------------------------------
def wait_until(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.05, what: str = "condition") -> T:
    """Poll `predicate` until it returns a truthy value; LabError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise LabError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def _ip(args: Sequence[str], batch: str | None = None) -> None:
    result = subprocess.run(["ip", *args], input=batch, capture_output=True, text=True)
    if result.returncode:
        command = " ".join(["ip", *args]) + (f" <<< {batch!r}" if batch else "")
        raise LabError(f"{command} failed: {result.stderr.strip() or result.stdout.strip()}")


def lab_namespaces(lab: str) -> list[str]:
    """Every netns of the lab: switch, hosts and the daemons' container namespaces."""
    prefix = f"shoal-{lab}-"
    try:
        names = os.listdir(NETNS_DIR)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.startswith(prefix))


def exists(lab: str) -> bool:
    validate_name(lab)
    return run_dir(lab).exists() or data_dir(lab).exists() or bool(lab_namespaces(lab))


def _alive(pid: int) -> bool:
    """True while `pid` runs (zombies count as dead; our own children are reaped here)."""
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        _CHILDREN.pop(pid, None)
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in (b"Z", b"X")


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def _read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _pids_in_netns(names: Iterable[str]) -> list[int]:
    """Processes whose network namespace is one of `names` (what `ip netns pids` does)."""
    wanted = set()
    for name in names:
        try:
            st = os.stat(NETNS_DIR / name)
        except OSError:
            continue
        wanted.add((st.st_dev, st.st_ino))
    if not wanted:
        return []
    me = os.getpid()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            st = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in wanted:
            pids.append(int(entry))
    return pids


def _signal(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _umount_detach(path: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.umount2(path.encode(), _MNT_DETACH)  # EINVAL (not a mount point) is fine here


def _mount_run_tmpfs(path: Path) -> None:
    """A host's /run: a tmpfs on `path` (unmounted by `down` with the rest of the lab's mounts)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"shoal-lab", str(path).encode(), b"tmpfs", _MS_NOSUID | _MS_NODEV,
                  RUN_TMPFS_OPTIONS.encode()) != 0:
        err = ctypes.get_errno()
        raise LabError(f"cannot mount a tmpfs on {path}: {os.strerror(err)}")


def _mounts_under(roots: Sequence[Path]) -> list[str]:
    """Mount points at or below `roots`, deepest first (from /proc/self/mountinfo)."""
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if len(fields) < 5:
                continue
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
            for root in roots:
                if point == str(root) or point.startswith(f"{root}/"):
                    found.append(point)
    return sorted(set(found), key=lambda p: (p.count("/"), len(p)), reverse=True)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:]) or f"({path} is empty)"


# ---- teardown (stateless) -------------------------------------------------------------
def down(lab: str) -> None:
    """Remove everything `up` made for lab `lab`, derived from names alone; quiet if none.

    Order: daemons, runc containers, any process left in the lab's namespaces, mounts under
    the lab's directories, the namespaces (switch, hosts, containers), the directories.
    """
    validate_name(lab)
    namespaces = lab_namespaces(lab)
    host_dirs = sorted(p for p in run_dir(lab).glob("h*") if p.is_dir()) if run_dir(lab).is_dir() else []

    # Everything is about to be deleted, so there is nothing for a graceful shutdown to save:
    # SIGKILL at once (a daemon's SIGTERM may stop its containers one timeout at a time).
    daemons = []
    for d in host_dirs:
        pid = _read_pid(d / "daemon.pid")
        # The pid file may be stale and the pid reused: only signal a process that is ours.
        if pid and _alive(pid) and f"{run_dir(lab)}/" in _cmdline(pid):
            daemons.append(pid)
    daemons += [p for p in _pids_in_netns(n for n in namespaces if re.fullmatch(rf"shoal-{lab}-h\d+", n))
                if p not in daemons]
    _stop(daemons, signal.SIGKILL, grace=0.0)

    for d in host_dirs:
        _remove_runc_containers(d / "runc")
    _remove_daemon_cgroups(lab)

    leftovers = _pids_in_netns(lab_namespaces(lab))
    _stop(leftovers, signal.SIGKILL, grace=0.0)

    roots = [run_dir(lab), data_dir(lab)]
    for point in _mounts_under(roots):
        _umount_detach(point)

    for name in lab_namespaces(lab):
        path = NETNS_DIR / name
        _umount_detach(str(path))
        try:
            path.unlink()
        except FileNotFoundError:
            pass

    for root in roots:
        if root.exists():
            shutil.rmtree(root, ignore_errors=True)
            if root.exists():
                raise LabError(f"lab {lab}: could not remove {root}")
    for parent in (RUN_ROOT, DATA_ROOT):
        try:
            parent.rmdir()  # only if no other lab uses it
        except OSError:
            pass


def _stop(pids: Sequence[int], first: int, grace: float) -> None:
    """Send `first`, wait up to `grace` s, then SIGKILL survivors and wait for them to go."""
    if not pids:
        return
    _signal(pids, first)
    deadline = time.monotonic() + grace
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    survivors = [p for p in pids if _alive(p)]
    if survivors:
        _signal(survivors, signal.SIGKILL)
        wait_until(lambda: not any(_alive(p) for p in survivors), STOP_DEADLINE_S, what=f"processes {survivors} to exit")


def _remove_daemon_cgroups(lab: str) -> None:
    """The cgroup parent each host's daemon made (/shoal/<engine id[:12]>), once its runc
    containers (and so their cgroups) are gone."""
    from agent.executor.cgroups import remove_daemon_parent

    for engine_id in data_dir(lab).glob("h*/engine/engine-id"):
        try:
            remove_daemon_parent(engine_id.read_text().strip())
        except OSError:
            pass


def _remove_runc_containers(root: Path) -> None:
    if not root.is_dir():
        return
    for entry in sorted(root.iterdir()):
        if not (entry / "state.json").exists():
            continue
        for args in (["kill", entry.name, "KILL"], ["delete", "--force", entry.name]):
            subprocess.run(["runc", "--root", str(root), *args], capture_output=True, timeout=30)


# ---- the lab --------------------------------------------------------------------------
class Lab:
    """A running lab; `Lab.up` builds one, `Lab.open` attaches to an existing one."""

    def __init__(self, name: str, host_count: int, daemon_args: Sequence[str] = (), daemon_cmd: str = "") -> None:
        self.name = validate_name(name)
        self.host_count = host_count
        self.daemon_args = list(daemon_args)  # extra `shoal daemon` flags for every host (e.g. --dns)
        # $SHOAL_LAB_DAEMON_CMD as it was at `up`: kept in lab.json so that `lab start`, `restart` and
        # `add-host` run the same daemon as the others whatever the caller's environment says.
        self.daemon_cmd = daemon_cmd

    # ---- construction ---------------------------------------------------------------
    @classmethod
    def up(cls, name: str, hosts: int, force: bool = False, ping_deadline: float = PING_DEADLINE_S,
           daemon_args: Sequence[str] = ()) -> Lab:
        """Build lab `name` with `hosts` hosts and wait until every daemon answers /_ping.

        On any failure everything made so far is removed again.
        """
        validate_name(name)
        if not isinstance(hosts, int) or not 1 <= hosts <= MAX_HOSTS:
            raise LabError(f"invalid number of hosts {hosts!r}: must be 1..{MAX_HOSTS}")
        if exists(name):
            if not force:
                raise LabError(f"lab {name!r} already exists: run 'shoal lab down --name {name}' first, or use --force")
            down(name)
        lab = cls(name, hosts, daemon_args, os.environ.get(DAEMON_CMD_ENV, ""))
        try:
            lab._build()
            for host in lab.hosts:
                lab._start_daemon(host)
            deadline = time.monotonic() + ping_deadline
            for host in lab.hosts:
                lab._wait_ready(host, deadline)
        except BaseException:
            down(name)
            raise
        return lab

    @classmethod
    def open(cls, name: str) -> Lab:
        """The existing lab `name` (LabError if there is none)."""
        validate_name(name)
        count = 0
        daemon_args: list[str] = []
        daemon_cmd = ""
        try:
            saved = json.loads((run_dir(name) / "lab.json").read_text())
            count = int(saved["hosts"])
            daemon_args = [str(a) for a in saved.get("daemon_args", [])]
            daemon_cmd = str(saved.get("daemon_cmd", ""))
        except (OSError, ValueError, KeyError, TypeError):
            indexes = [int(m.group(1)) for n in lab_namespaces(name)
                       if (m := re.fullmatch(rf"shoal-{name}-h(\d+)", n))]
            count = max(indexes, default=0)
        if not count:
            raise LabError(f"no lab named {name!r} (start one with 'shoal lab up --hosts N --name {name}')")
        return cls(name, count, daemon_args, daemon_cmd)

    def _build(self) -> None:
        sw = switch_netns(self.name)
        RUN_ROOT.mkdir(parents=True, exist_ok=True)
        run_dir(self.name).mkdir(parents=True)
        _mount_run_tmpfs(run_dir(self.name))
        self._save()
        _ip(["-batch", "-"], "".join(f"netns add {n}\n" for n in [sw, *map(self.netns, self.hosts)]))
        switch = ["link set lo up", "link add br0 type bridge", "link set br0 up"]
        for host in self.hosts:
            # Made inside the switch namespace with the peer placed straight into the host's:
            # the root namespace never sees these links.
            switch.append(f"link add {host} type veth peer name eth0 netns {self.netns(host)}")
            switch.append(f"link set {host} master br0 up")
        _ip(["-n", sw, "-batch", "-"], "".join(f"{c}\n" for c in switch))
        for host in self.hosts:
            self._configure_host(host)

    def _configure_host(self, host: str) -> None:
        """eth0's address, the host's directories and its UTS namespace named after it."""
        _ip(["-n", self.netns(host), "-batch", "-"],
            f"link set lo up\naddr add {self.address(host)}/24 dev eth0\nlink set eth0 up\n")
        run_dir(self.name, host).mkdir(parents=True, exist_ok=True)
        data_dir(self.name, host).mkdir(parents=True, exist_ok=True)
        uts = uts_path(self.name, host)
        uts.touch()
        # unshare(1) binds the new namespace onto the file: it lasts until `down` unmounts it.
        result = subprocess.run(["unshare", f"--uts={uts}", "hostname", host], capture_output=True, text=True)
        if result.returncode:
            raise LabError(f"lab {self.name}: could not give {host} its own hostname: {result.stderr.strip()}")

    def _save(self) -> None:
        from common.fsutil import write_atomic

        write_atomic(run_dir(self.name) / "lab.json",
                     json.dumps({"name": self.name, "hosts": self.host_count, "daemon_args": self.daemon_args,
                                 "daemon_cmd": self.daemon_cmd}) + "\n",
                     mode=0o644)

    # ---- names ----------------------------------------------------------------------
    @property
    def hosts(self) -> list[str]:
        return host_names(self.host_count)

    def _check(self, host: str) -> str:
        if host not in self.hosts:
            raise LabError(f"lab {self.name!r} has no host {host!r} (hosts: {', '.join(self.hosts)})")
        return host

    def netns(self, host: str) -> str:
        return host_netns(self.name, self._check(host))

    def address(self, host: str) -> str:
        return host_address(self._check(host))

    def socket(self, host: str) -> Path:
        return socket_path(self.name, self._check(host))

    def url(self, host: str) -> str:
        return f"unix://{self.socket(host)}"

    def client(self, host: str, timeout: float | None = 30.0) -> Client:
        return Client(self.url(host), timeout=timeout)

    def log(self, host: str) -> Path:
        return run_dir(self.name, self._check(host)) / "daemon.log"

    def daemon_pid(self, host: str) -> int | None:
        return _read_pid(run_dir(self.name, self._check(host)) / "daemon.pid")

    # ---- daemons --------------------------------------------------------------------
    def _start_daemon(self, host: str) -> int:
        directory = run_dir(self.name, host)
        directory.mkdir(parents=True, exist_ok=True)
        argv = launch_argv(self.name, host, {DAEMON_CMD_ENV: self.daemon_cmd}) + self.daemon_args
        env = dict(os.environ)
        package_root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
        for key in ("SHOAL_HOST", "DOCKER_HOST"):
            env.pop(key, None)
        with open(directory / "daemon.log", "ab") as log:
            log.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} {shlex.join(argv)}\n".encode())
            log.flush()
            # A new session: the daemon outlives the CLI that started it and its terminal.
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, env=env, cwd="/")
        _CHILDREN[proc.pid] = proc
        (directory / "daemon.pid").write_text(f"{proc.pid}\n")
        return proc.pid

    def _wait_ready(self, host: str, deadline: float) -> None:
        pid = self.daemon_pid(host)
        client = Client(self.url(host), timeout=5.0)
        try:
            while True:
                if client.ping():
                    return
                if pid is None or not _alive(pid):
                    raise LabError(f"lab {self.name}: the daemon of {host} exited before answering /_ping; "
                                   f"last lines of {self.log(host)}:\n{_tail(self.log(host))}")
                if time.monotonic() > deadline:
                    raise LabError(f"lab {self.name}: the daemon of {host} (pid {pid}) did not answer /_ping on "
                                   f"{self.socket(host)} in time; last lines of {self.log(host)}:\n"
                                   f"{_tail(self.log(host))}")
                time.sleep(0.05)
        finally:
            client.close()

    def stop_daemon(self, host: str, kill9: bool = False, deadline: float = PING_DEADLINE_S) -> None:
        """SIGKILL (kill9) or SIGTERM the host's daemon and wait until it is gone; its
        containers keep running."""
        self._check(host)
        pid = self.daemon_pid(host)
        if pid and _alive(pid):
            os.kill(pid, signal.SIGKILL if kill9 else signal.SIGTERM)
            wait_until(lambda: not _alive(pid), deadline, what=f"the daemon of {host} (pid {pid}) to exit")

    def start_daemon(self, host: str, deadline: float = PING_DEADLINE_S) -> int:
        """Start the host's daemon and wait for /_ping; returns its pid."""
        self._check(host)
        new_pid = self._start_daemon(host)
        self._wait_ready(host, time.monotonic() + deadline)
        return new_pid

    def restart_daemon(self, host: str, kill9: bool = False, deadline: float = PING_DEADLINE_S) -> int:
        """SIGKILL (kill9) or SIGTERM the host's daemon, wait for it to die, start it again and
        wait for /_ping. Returns the new pid."""
        self.stop_daemon(host, kill9, deadline)
        return self.start_daemon(host, deadline)

    # ---- fault injection -----------------------------------------------------------
    def kill(self, host: str) -> None:
        """SIGKILL the host's daemon (a crash); its containers keep running."""
        pid = self.daemon_pid(host)
        if not (pid and _alive(pid)):
            raise LabError(f"lab {self.name}: the daemon of {host} is not running")
        self.stop_daemon(host, kill9=True)

    def start(self, host: str, deadline: float = PING_DEADLINE_S) -> int:
        """Start the host's daemon again with the same command line; LabError if it runs."""
        pid = self.daemon_pid(host)
        if pid and _alive(pid) and f"{run_dir(self.name)}/" in _cmdline(pid):
            raise LabError(f"lab {self.name}: the daemon of {host} is already running (pid {pid})")
        return self.start_daemon(host, deadline)

    def _switch(self) -> Path:
        return NETNS_DIR / switch_netns(self.name)

    def partition(self, hosts: Sequence[str], others: Sequence[str] = ()) -> list[tuple[str, str]]:
        """Drop every frame between `hosts` and `others` (default: every other host) on the switch.

        Hosts within one side keep reaching each other. Returns the pairs cut.
        """
        from shoal import labfaults

        group = list(dict.fromkeys(self._check(h) for h in hosts))
        if not group:
            raise LabError("partition needs at least one host")
        rest = list(dict.fromkeys(self._check(h) for h in others)) or [h for h in self.hosts if h not in group]
        both = [h for h in group if h in rest]
        if both:
            raise LabError(f"host {both[0]} cannot be on both sides of a partition")
        if not rest:
            raise LabError(f"lab {self.name}: no host left to partition {', '.join(group)} from")
        pairs = labfaults.partition_pairs(group, rest)
        try:
            labfaults.apply(self._switch(), labfaults.partition_script(pairs, labfaults.current(self._switch()).partitions))
        except labfaults.FaultError as e:
            raise LabError(f"lab {self.name}: {e}") from None
        return pairs

    def heal(self) -> None:
        """Remove every partition the lab made (loss stays until `loss HOST 0`)."""
        from shoal import labfaults

        try:
            labfaults.heal(self._switch())
        except labfaults.FaultError as e:
            raise LabError(f"lab {self.name}: {e}") from None

    def loss(self, host: str, percent: float) -> None:
        """Drop `percent` % of the frames into and out of the host's switch port at random; 0 ends it."""
        from shoal import labfaults

        self._check(host)
        if not isinstance(percent, (int, float)) or not 0 <= percent <= 100:
            raise LabError(f"invalid loss {percent!r}: must be a percentage from 0 to 100")
        try:
            old = labfaults.loss_handles(self._switch(), host)
            labfaults.apply(self._switch(), labfaults.loss_script(host, float(percent), old))
        except labfaults.FaultError as e:
            raise LabError(f"lab {self.name}: {e}") from None

    def faults(self):  # type: ignore[no-untyped-def]
        """The partitions and loss in force on the switch (shoal.labfaults.Faults)."""
        from shoal import labfaults

        return labfaults.current(self._switch())

    def add_host(self, ping_deadline: float = PING_DEADLINE_S) -> str:
        """Grow the running lab by one host (h<N+1>) with its daemon; returns its name.

        On failure the new host's parts are removed again and the lab keeps its size.
        """
        if self.host_count >= MAX_HOSTS:
            raise LabError(f"lab {self.name} has {self.host_count} hosts, the most a lab can have")
        host = f"h{self.host_count + 1}"
        ns = host_netns(self.name, host)
        if (NETNS_DIR / ns).exists():
            raise LabError(f"lab {self.name}: namespace {ns} exists already (another add-host running?)")
        self.host_count += 1
        try:
            _ip(["netns", "add", ns])
            _ip(["-n", switch_netns(self.name), "-batch", "-"],
                f"link add {host} type veth peer name eth0 netns {ns}\nlink set {host} master br0 up\n")
            self._configure_host(host)
            self._start_daemon(host)
            self._wait_ready(host, time.monotonic() + ping_deadline)
            self._save()
        except BaseException:
            self._remove_host(host)
            self.host_count -= 1
            raise
        return host

    def _remove_host(self, host: str) -> None:
        """Undo a failed add_host: the host's daemon, containers, mounts, namespaces, port, dirs."""
        pid = self.daemon_pid(host)
        pids = [pid] if pid and _alive(pid) and f"{run_dir(self.name)}/" in _cmdline(pid) else []
        own = [n for n in lab_namespaces(self.name) if n == host_netns(self.name, host)
               or n.startswith(f"{host_netns(self.name, host)}-")]
        _stop(pids + [p for p in _pids_in_netns(own) if p not in pids], signal.SIGKILL, grace=0.0)
        _remove_runc_containers(run_dir(self.name, host) / "runc")
        for point in _mounts_under([run_dir(self.name, host), data_dir(self.name, host)]):
            _umount_detach(point)
        for name in own:
            _umount_detach(str(NETNS_DIR / name))
            (NETNS_DIR / name).unlink(missing_ok=True)
        subprocess.run(["ip", "-n", switch_netns(self.name), "link", "del", host], capture_output=True)
        for root in (run_dir(self.name, host), data_dir(self.name, host)):
            shutil.rmtree(root, ignore_errors=True)

    # ---- commands in hosts ----------------------------------------------------------
    def host_env(self, host: str) -> dict[str, str]:
        env = dict(os.environ)
        env["SHOAL_HOST"] = env["DOCKER_HOST"] = self.url(host)
        return env

    def exec_argv(self, host: str, argv: Sequence[str]) -> list[str]:
        # nsenter --uts first: `ip netns exec` switches the network (and mount) namespace only.
        uts = _uts_option(self.name, self._check(host))
        return [*(["nsenter", *uts, "--"] if uts else []), "ip", "netns", "exec", self.netns(host), *argv]

    def exec(self, host: str, argv: Sequence[str], check: bool = True, timeout: float | None = 60.0,
             input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run `argv` in the host's namespace with SHOAL_HOST/DOCKER_HOST set; output captured."""
        if isinstance(argv, str):
            raise TypeError("argv must be a sequence of arguments, not a string")
        full = self.exec_argv(host, argv)
        result = subprocess.run(full, capture_output=True, text=True, env=self.host_env(host), timeout=timeout,
                                input=input)
        if check and result.returncode != 0:
            raise LabCommandError(result.returncode, full, result.stdout, result.stderr)
        return result

    # ---- status and teardown --------------------------------------------------------
    def status(self) -> list[HostStatus]:
        rows = []
        for host in self.hosts:
            pid = self.daemon_pid(host)
            running = bool(pid and _alive(pid))
            answers = False
            if running:
                with Client(self.url(host), timeout=2.0) as client:
                    answers = client.ping()
            rows.append(HostStatus(host, self.netns(host), self.address(host), self.socket(host), pid, running,
                                   answers))
        return rows

    def down(self) -> None:
        down(self.name)
