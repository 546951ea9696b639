"""The compose lab: docker-compose.test.yml (3 managers + 2 workers on real containers) brought up under a
dockerd of its own, in a one-host shoal lab namespace, checked, and torn down whatever happened.

Neighbours: docker-compose.test.yml and compose/ (Dockerfile, node.sh) are what it builds and runs;
shoal.lab gives the namespace, starts dockerd in it and removes it; tests/lab/test_compose_lab.py drives
it; scripts/compose_lab.sh is the command people type.

Steps of `run`:
  prepare   a minimal Debian (debootstrap --variant=minbase, the machine's suite, arch and Debian mirror)
            as a rootfs tarball, cached; the node's .debs resolved against it and downloaded from the same
            mirror, cached; shoal's runtime wheels through the machine's pip index, cached; the build
            contexts staged in build/compose/ (deps-context: debs, wheels; context: shoal's source, node.sh)
  dockerd   a lab `cmp<hex>` of one host whose daemon is dockerd 20.10 (/opt/shoal-docker-ref/bin):
            nothing it runs reaches past that namespace (no route leaves it)
  build     the dependencies image (compose/Dockerfile.deps): `docker load` of its cached tarball, or
            `docker import` of the base tarball as shoal-debian:SUITE, `docker build`, `docker save` to the
            cache; then `docker-compose build` of the node image (compose/Dockerfile: shoal's source). Offline.
  up        `docker-compose up -d`, then polls `shoal node ls` on m1 until the 5 nodes are Ready with
            m1 Leader and m2, m3 Reachable
  service   the seed's service example (overlay network + 2 replicas) when the image has `shoal service`;
            otherwise reported as not possible yet
  down      compose down -v, then the lab's own teardown (dockerd, containerd, shims, mounts, namespace),
            the runc containers of dockerd and the cgroups the nodes made, by name: `down --name LAB`
            does the same for a run that was killed
Caches live in $SHOAL_COMPOSE_CACHE, default /var/cache/shoal/compose: outside the clone, so CI's fresh clone of
every run (and every worktree) reuses the debootstrap (minutes) instead of redoing it; keyed by suite and arch
(base), the package list and the base's dpkg status (debs), the pins (wheels), all of those and Dockerfile.deps
(the dependencies image). Delete the folder to start over.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shoal.lab import DAEMON_CMD_ENV, Lab, data_dir, run_dir  # noqa: E402
from shoal.lab import down as lab_down  # noqa: E402

DOCKER_BIN = Path("/opt/shoal-docker-ref/bin")
KEY_JSON = Path("/etc/docker/key.json")  # dockerd 20.10 writes its trust key there (no flag moves it)
COMPOSE_FILE = ROOT / "docker-compose.test.yml"
CONTEXT = ROOT / "build" / "compose" / "context"
DEPS_CONTEXT = ROOT / "build" / "compose" / "deps-context"
DEPS_IMAGE = "shoal-node-deps:lab"
PROJECT = "shoallab"  # compose project name: containers shoallab_m1_1, ...; the dockerd is private
NODE_IMAGE = "shoal-node:lab"
MANAGERS = ("m1", "m2", "m3")
WORKERS = ("w1", "w2")
# What a node needs besides the base system: shoal's Python, the tools it drives, busybox for its image.
NODE_DEBS = ("python3", "python3-venv", "iproute2", "iptables", "nftables", "runc", "busybox-static",
             "procps", "kmod", "conntrack", "iputils-ping")


def shoal_source(root: Path = ROOT) -> list[str]:
    """What the node image installs shoal from: pyproject.toml and the packages it names (so a new top-level
    package needs no change here)."""
    find = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    return [*sorted({p.rstrip("*").rstrip(".") for p in find["include"]}), "pyproject.toml"]

POLL_S = 0.5


class ComposeLabError(Exception):
    """A step failed; the message names the step and what it saw."""


def log(text: str) -> None:
    print(f"compose-lab: {text}", file=sys.stderr, flush=True)


def run(argv: Sequence[str], *, env: dict[str, str] | None = None, timeout: float = 600,
        check: bool = True, quiet: bool = False) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(argv), capture_output=True, text=True, env=env, timeout=timeout)
    if check and result.returncode:
        raise ComposeLabError(f"`{shlex.join(argv)}` exited {result.returncode}:\n"
                              f"{(result.stdout + result.stderr).strip()[-3000:]}")
    if not quiet and result.stderr.strip() and result.returncode:
        log(result.stderr.strip()[-500:])
    return result


# ---- the host's Debian ------------------------------------------------------------------------------------
@dataclass(slots=True, frozen=True)
class Debian:
    suite: str  # bookworm
    arch: str  # amd64
    mirror: str  # the machine's own Debian mirror, as its apt sources name it

    @property
    def key(self) -> str:
        return f"{self.suite}-{self.arch}"


def host_debian(os_release: Path = Path("/etc/os-release"), sources: Sequence[Path] = ()) -> Debian:
    """Suite and arch of this machine, and the Debian mirror its apt sources use for that suite."""
    fields = dict(line.split("=", 1) for line in os_release.read_text().splitlines() if "=" in line)
    suite = fields.get("VERSION_CODENAME", "").strip('"')
    if not suite:
        raise ComposeLabError(f"{os_release} names no VERSION_CODENAME: not a Debian release")
    arch = run(["dpkg", "--print-architecture"]).stdout.strip()
    files = list(sources) or [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in files:
        mirror = mirror_for(path.read_text() if path.is_file() else "", suite, path.suffix == ".sources")
        if mirror:
            return Debian(suite, arch, mirror)
    raise ComposeLabError(f"no apt source of this machine serves Debian {suite} (looked in "
                          f"{', '.join(map(str, files))})")


def mirror_for(text: str, suite: str, deb822: bool) -> str | None:
    """The URI serving `suite` (the release itself, not -updates/-security) with component main."""
    if deb822:
        for stanza in re.split(r"\n\s*\n", text):
            entry: dict[str, str] = {}
            for line in stanza.splitlines():
                if ":" in line and not line.startswith(("#", " ")):
                    key, value = line.split(":", 1)
                    entry[key.strip().lower()] = value.strip()
            if ("deb" in entry.get("types", "").split() and suite in entry.get("suites", "").split()
                    and "main" in entry.get("components", "").split() and entry.get("uris")):
                return entry["uris"].split()[0]
        return None
    for line in text.splitlines():
        words = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
        if len(words) >= 4 and words[0] == "deb" and words[2] == suite and "main" in words[3:]:
            return words[1]
    return None


# ---- caches -----------------------------------------------------------------------------------------------
DEFAULT_CACHE = Path("/var/cache/shoal/compose")


def cache_root() -> Path:
    return Path(os.environ.get("SHOAL_COMPOSE_CACHE") or DEFAULT_CACHE)


def digest(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


def base_tarball(debian: Debian, cache: Path) -> Path:
    """The minimal Debian rootfs as a tarball for `docker import`, made once by debootstrap."""
    tarball = cache / f"debian-{debian.key}.tar"
    if tarball.is_file():
        return tarball
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / f".rootfs-{debian.key}-{os.getpid()}"
    started = time.monotonic()
    log(f"debootstrap --variant=minbase {debian.suite} from {debian.mirror} (cached in {tarball} once done)")
    try:
        run(["debootstrap", "--variant=minbase", f"--arch={debian.arch}", debian.suite, str(target), debian.mirror],
            timeout=1800)
        partial = tarball.with_suffix(".tar.partial")
        # The downloaded .debs stay out of the image; the dpkg status is kept beside the tarball: the node's
        # packages are resolved against it.
        run(["tar", "-C", str(target), "--exclude=./var/cache/apt/archives/*.deb", "--numeric-owner",
             "-cf", str(partial), "."])
        shutil.copyfile(target / "var/lib/dpkg/status", cache / f"debian-{debian.key}.status")
        partial.rename(tarball)
    finally:
        _remove_tree(target)
    log(f"debootstrap: {time.monotonic() - started:.0f} s")
    return tarball


def _remove_tree(path: Path) -> None:
    """A debootstrap target, with anything still mounted under it (proc, sys) when it was interrupted."""
    if not path.exists():
        return
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()
              if line.split()[1] == str(path) or line.split()[1].startswith(f"{path}/")]
    for point in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)
    shutil.rmtree(path, ignore_errors=True)


def node_debs(debian: Debian, cache: Path) -> Path:
    """The .debs the node needs on top of the base, resolved against the base's dpkg status with this
    machine's apt (same suite and mirror), downloaded once."""
    status = cache / f"debian-{debian.key}.status"
    out = cache / f"debs-{debian.key}-{digest(*NODE_DEBS, status.read_text())}"
    if (out / ".complete").exists():
        return out
    shutil.rmtree(out, ignore_errors=True)
    (out / "partial").mkdir(parents=True)
    argv = ["apt-get", "install", "-y", "-qq", "--download-only", "--no-install-recommends",
            "-o", f"Dir::State::status={status}", "-o", f"Dir::Cache::archives={out}",
            "-o", f"APT::Architecture={debian.arch}", *NODE_DEBS]
    if run(argv, check=False, quiet=True).returncode:
        run(["apt-get", "update", "-qq"], timeout=900)  # stale lists: the mirror moved on
        run(argv)
    shutil.rmtree(out / "partial", ignore_errors=True)
    (out / "lock").unlink(missing_ok=True)
    write_packages_index(out)
    (out / "packages.txt").write_text("\n".join(NODE_DEBS) + "\n")
    (out / ".complete").write_text("\n".join(sorted(p.name for p in out.glob("*.deb"))) + "\n")
    return out


def write_packages_index(repo: Path) -> None:
    """A flat apt repository's Packages file over the .debs in `repo`, so that apt (which orders installs by
    Pre-Depends, as a single `dpkg -i` does not) installs them from `deb [trusted=yes] file:REPO ./`."""
    stanzas = []
    for deb in sorted(repo.glob("*.deb")):
        control = run(["dpkg-deb", "-f", str(deb)]).stdout.rstrip("\n")
        data = deb.read_bytes()
        stanzas.append(f"{control}\nFilename: ./{deb.name}\nSize: {len(data)}\n"
                       f"SHA256: {hashlib.sha256(data).hexdigest()}\n")
    (repo / "Packages").write_text("\n".join(stanzas))


def runtime_requirements(root: Path = ROOT) -> list[str]:
    """requirements.txt's pins of the packages pyproject.toml lists as runtime dependencies."""
    deps = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.split(r"[<>=!~ \[]", d, maxsplit=1)[0].lower().replace("_", "-") for d in deps}
    pins = []
    for line in (root / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and re.split(r"[<>=!~ \[]", line, maxsplit=1)[0].lower().replace("_", "-") in names:
            pins.append(line)
    missing = names - {re.split(r"[<>=!~ \[]", p, maxsplit=1)[0].lower().replace("_", "-") for p in pins}
    if missing:
        raise ComposeLabError(f"requirements.txt pins no version of {', '.join(sorted(missing))}")
    return pins


def wheels(cache: Path) -> Path:
    """Wheels of shoal's runtime dependencies (and the build backend), through the pip index install.sh uses."""
    pins = runtime_requirements()
    build = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    out = cache / f"wheels-{digest(*pins, *build)}"
    if (out / ".complete").exists():
        return out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    (out / "requirements.txt").write_text("\n".join(pins) + "\n")
    pip = ROOT / ".venv" / "bin" / "pip"
    run([str(pip), "download", "-q", "--disable-pip-version-check", "--only-binary", ":all:",
         "--dest", str(out), "-r", str(out / "requirements.txt"), *build], timeout=900)
    (out / ".complete").write_text("\n".join(sorted(p.name for p in out.glob("*.whl"))) + "\n")
    return out


def _copy_tree(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".complete", "lock"))


def stage_contexts(debs: Path, wheel_dir: Path, context: Path = CONTEXT,
                   deps_context: Path = DEPS_CONTEXT) -> tuple[Path, Path]:
    """What the Dockerfiles COPY, made afresh each time (small; never a stale source): deps-context (the .debs
    and the wheels, for compose/Dockerfile.deps) and context (shoal's source and node.sh, compose/Dockerfile)."""
    for path in (context, deps_context):
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
    shutil.copy2(ROOT / "compose" / "Dockerfile.deps", deps_context / "Dockerfile")
    _copy_tree(debs, deps_context / "debs")
    _copy_tree(wheel_dir, deps_context / "wheels")
    shutil.copy2(ROOT / "compose" / "Dockerfile", context / "Dockerfile")
    shutil.copy2(ROOT / "compose" / "node.sh", context / "node.sh")
    for name in shoal_source():
        src = ROOT / name
        if src.is_dir():
            _copy_tree(src, context / "src" / name)
        else:
            (context / "src").mkdir(exist_ok=True)
            shutil.copy2(src, context / "src" / name)
    return context, deps_context


@dataclass(slots=True)
class Prepared:
    debian: Debian
    base: Path  # rootfs tarball
    context: Path  # compose/Dockerfile's
    deps_context: Path  # compose/Dockerfile.deps'
    deps_tarball: Path  # where the built dependencies image is cached (`docker save`); may not exist yet

    @property
    def base_image(self) -> str:
        return f"shoal-debian:{self.debian.suite}"


def prepare(cache: Path | None = None) -> Prepared:
    cache = cache or cache_root()
    debian = host_debian()
    base = base_tarball(debian, cache)
    debs, wheel_dir = node_debs(debian, cache), wheels(cache)
    context, deps_context = stage_contexts(debs, wheel_dir)
    # The dependencies image is a function of the base, the .debs, the wheels and Dockerfile.deps: its key.
    key = digest(base.name, str(base.stat().st_size), (debs / ".complete").read_text(),
                 (wheel_dir / ".complete").read_text(), (ROOT / "compose" / "Dockerfile.deps").read_text())
    return Prepared(debian, base, context, deps_context, cache / f"node-deps-{debian.key}-{key}.tar")


def build_images(lab: str, prepared: Prepared) -> str:
    """shoal-node-deps:lab from its cached tarball, or built (base imported first) and cached; then the node
    image through `docker-compose build`. Returns how the dependencies image was had."""
    if prepared.deps_tarball.is_file():
        docker(lab, "load", "-q", "-i", str(prepared.deps_tarball))
        how = f"loaded {prepared.deps_tarball}"
    else:
        docker(lab, "import", "--change", 'CMD ["/bin/bash"]', str(prepared.base), prepared.base_image)
        docker(lab, "build", "-q", "--build-arg", f"BASE={prepared.base_image}", "-t", DEPS_IMAGE,
               str(prepared.deps_context), timeout=1800)
        partial = prepared.deps_tarball.with_suffix(".partial")
        docker(lab, "save", "-o", str(partial), DEPS_IMAGE)
        partial.rename(prepared.deps_tarball)
        how = f"built from {prepared.base_image} (imported from {prepared.base}), saved to {prepared.deps_tarball}"
    compose(lab, "build", "--build-arg", f"DEPS={DEPS_IMAGE}", timeout=1200)
    return how


# ---- dockerd in a lab namespace -----------------------------------------------------------------------------
def cgroup_parent(lab: str) -> str:
    """dockerd's --cgroup-parent: the node containers' cgroups sit under it, removed by name at teardown."""
    return f"shoal-compose-{lab}"


def dockerd_cmd(lab: str) -> str:
    # The lab appends: daemon --host unix://SOCK --data-dir D --exec-root E --netns-prefix P ($1..$9); exec
    # keeps the lab's pid file on dockerd itself.
    script = (f'PATH={DOCKER_BIN}:$PATH exec dockerd -H "$3" --data-root "$5" --exec-root "$7" '
              f'--pidfile "$7/dockerd.pid" --cgroup-parent {cgroup_parent(lab)}')
    return shlex.join(["sh", "-c", script, "sh"])


def start_dockerd(lab: str, timeout: float = 60.0) -> Lab:
    saved = os.environ.get(DAEMON_CMD_ENV)
    os.environ[DAEMON_CMD_ENV] = dockerd_cmd(lab)
    try:
        return Lab.up(lab, 1, ping_deadline=timeout)
    finally:
        if saved is None:
            os.environ.pop(DAEMON_CMD_ENV, None)
        else:
            os.environ[DAEMON_CMD_ENV] = saved


def docker_env(lab: str) -> dict[str, str]:
    """The environment of docker and docker-compose talking to the lab's dockerd (from the root namespace:
    a unix socket is reached through the filesystem)."""
    env = dict(os.environ)
    env["DOCKER_HOST"] = f"unix://{run_dir(lab, 'h1')}/shoal.sock"
    env["DOCKER_CONFIG"] = str(run_dir(lab))  # the docker CLI writes its config there, not in ~/.docker
    env["PATH"] = f"{DOCKER_BIN}:{env.get('PATH', '')}"
    env.pop("DOCKER_BUILDKIT", None)
    env.pop("COMPOSE_DOCKER_CLI_BUILD", None)
    return env


def compose(lab: str, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(["docker-compose", "-f", str(COMPOSE_FILE), "-p", PROJECT, *args], env=docker_env(lab),
               timeout=timeout, check=check)


def docker(lab: str, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run([str(DOCKER_BIN / "docker"), *args], env=docker_env(lab), timeout=timeout, check=check)


def node_exec(lab: str, node: str, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return run([str(DOCKER_BIN / "docker"), "exec", f"{PROJECT}_{node}_1", *argv], env=docker_env(lab),
               timeout=timeout, check=False, quiet=True)


# ---- checks -----------------------------------------------------------------------------------------------
@dataclass(slots=True, frozen=True)
class NodeRow:
    hostname: str
    status: str  # Ready / Down / Unknown
    availability: str  # Active / Pause / Drain
    manager: str  # Leader / Reachable / Unreachable; "" for a worker
    is_self: bool


def parse_node_ls(text: str) -> list[NodeRow]:
    """`shoal node ls`'s table (ID [*] HOSTNAME STATUS AVAILABILITY [MANAGER STATUS] [ENGINE VERSION])."""
    rows = []
    lines = text.splitlines()
    if not lines or not lines[0].startswith("ID"):
        return rows
    for line in lines[1:]:
        words = line.split()
        if len(words) < 4:
            continue
        is_self = words[1] == "*"
        rest = words[2:] if is_self else words[1:]
        manager = rest[3] if len(rest) > 3 and rest[3] in ("Leader", "Reachable", "Unreachable") else ""
        rows.append(NodeRow(rest[0], rest[1], rest[2], manager, is_self))
    return sorted(rows, key=lambda r: r.hostname)


def expected_nodes() -> list[NodeRow]:
    return [NodeRow("m1", "Ready", "Active", "Leader", True),
            *(NodeRow(m, "Ready", "Active", "Reachable", False) for m in MANAGERS[1:]),
            *(NodeRow(w, "Ready", "Active", "", False) for w in WORKERS)]


def wait_for(what: str, check: Callable[[], object], timeout: float) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise ComposeLabError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(POLL_S)


def node_states(lab: str) -> dict[str, str]:
    """Each node's /run/shoal-node.state (starting, joined, failed: ...), "" where it cannot be read."""
    states = {}
    for node in (*MANAGERS, *WORKERS):
        result = node_exec(lab, node, "cat", "/run/shoal-node.state", timeout=30)
        states[node] = result.stdout.strip() if result.returncode == 0 else ""
    return states


def wait_cluster(lab: str, timeout: float) -> list[NodeRow]:
    """Polls until every node says joined and m1's `node ls` is the expected table; fails at once when a
    node's bootstrap failed."""
    last: dict[str, object] = {}

    def formed() -> list[NodeRow] | None:
        states = node_states(lab)
        last["states"] = states
        failed = {n: s for n, s in states.items() if s.startswith("failed")}
        if failed:
            raise ComposeLabError(f"node bootstrap failed: {failed}\n{node_logs(lab)}")
        if any(s != "joined" for s in states.values()):
            return None
        result = node_exec(lab, "m1", "shoal", "node", "ls", timeout=30)
        last["node ls"] = result.stdout + result.stderr
        rows = parse_node_ls(result.stdout)
        return rows if rows == expected_nodes() else None

    try:
        return wait_for("5 nodes Ready (m1 Leader, m2 m3 Reachable, w1 w2 workers)", formed, timeout)  # type: ignore[return-value]
    except ComposeLabError as e:
        # The summary goes last: a caller that keeps only the tail of stderr (the test does) still sees it.
        raise ComposeLabError(f"{node_logs(lab)}\n{node_processes(lab)}\n{e}\nlast states: {last.get('states')}\n"
                              f"last node ls:\n{last.get('node ls')}") from None


_LOG_NOISE = re.compile(r"\d[\d:,.\- ]*\d|\b[0-9a-f]{12,}\b")


def squeeze_repeats(lines: Sequence[str]) -> list[str]:
    """Log lines with runs of lines that differ only in numbers (times, addresses, ids) folded into the run's
    first line and a count: a worker retrying its session every 0.2 s must not push everything else out."""
    out: list[str] = []
    seen: dict[str, int] = {}  # shape -> index in out of its first line
    repeats: dict[int, int] = {}
    for line in lines:
        shape = _LOG_NOISE.sub("#", line)
        if shape in seen:
            repeats[seen[shape]] = repeats.get(seen[shape], 0) + 1
            continue
        seen[shape] = len(out)
        out.append(line)
    return [f"{line}  [and {repeats[i]} more like it]" if i in repeats else line for i, line in enumerate(out)]


def node_logs(lab: str, lines: int = 60) -> str:
    """Each node's last log lines, repeats folded, the managers last (the leader's story is what explains a
    cluster that did not form)."""
    parts = []
    for node in (*WORKERS, *reversed(MANAGERS)):
        result = compose(lab, "logs", "--no-color", "--tail", str(lines), node, timeout=60, check=False)
        text = squeeze_repeats((result.stdout + result.stderr).strip().splitlines())
        parts.append(f"--- {node}: last {lines} log lines, repeats folded\n" + "\n".join(text))
    return "\n".join(parts)


def node_processes(lab: str) -> str:
    """Whether each node's container and daemon still run: a refused connection is a dead daemon or a slow one."""
    ps = compose(lab, "ps", "-a", timeout=60, check=False)
    lines = [f"--- compose ps -a\n{(ps.stdout + ps.stderr).strip()}"]
    for node in (*MANAGERS, *WORKERS):
        result = node_exec(lab, node, "sh", "-c", "pgrep -af 'shoal daemon' || echo 'no shoal daemon'", timeout=30)
        lines.append(f"{node}: {(result.stdout + result.stderr).strip() or f'exec failed ({result.returncode})'}")
    return "\n".join(lines)


SERVICE_EXAMPLE = [
    ["shoal", "network", "create", "--driver", "overlay", "--subnet", "10.0.9.0/24", "my-multi-host-network"],
    ["shoal", "service", "create", "--replicas", "2", "--network", "my-multi-host-network", "--name", "my-web",
     "busybox", "httpd", "-f", "-p", "80"],
]


@dataclass(slots=True)
class ServiceCheck:
    possible: bool
    converged: bool = False
    detail: str = ""


def check_service_example(lab: str, timeout: float = 120.0) -> ServiceCheck:
    """The seed's example (docs' networking guide, DESIGN §1): an overlay network and a 2-replica service on it,
    converged when `service ls` shows 2/2. Only where the node image has `shoal service`."""
    probe = node_exec(lab, "m1", "shoal", "service", "--help", timeout=30)
    if probe.returncode:
        said = (probe.stderr or probe.stdout).strip().splitlines() or [""]
        return ServiceCheck(False, detail=f"the node image has no `shoal service` yet: {said[-1][:200]}")
    for argv in SERVICE_EXAMPLE:
        result = node_exec(lab, "m1", *argv, timeout=60)
        if result.returncode:
            return ServiceCheck(True, False, f"`{shlex.join(argv)}` failed: {(result.stderr or result.stdout).strip()}")

    def replicas() -> str | None:
        out = node_exec(lab, "m1", "shoal", "service", "ls", timeout=30).stdout
        return out if re.search(r"\bmy-web\b.*\b2/2\b", out) else None

    try:
        out = wait_for("my-web 2/2", replicas, timeout)
    except ComposeLabError as e:
        ps = node_exec(lab, "m1", "shoal", "service", "ps", "my-web", timeout=30)
        return ServiceCheck(True, False, f"{e}\n{ps.stdout}{ps.stderr}")
    return ServiceCheck(True, True, str(out).strip())


# ---- teardown --------------------------------------------------------------------------------------------
def _node_engine_ids(lab: str) -> list[str]:
    """Engine ids of the shoal daemons in the nodes (in their data volumes): their cgroups are named by it."""
    root = data_dir(lab, "h1") / "volumes"
    return [p.read_text().strip() for p in root.glob("*/_data/engine/engine-id")] if root.is_dir() else []


def _remove_dockerd_containers(lab: str) -> None:
    """Containers of the lab's dockerd that its teardown leaves (dockerd killed first): by their runc root."""
    for root in run_dir(lab, "h1").glob("runtime-runc/*"):
        for entry in sorted(root.iterdir()) if root.is_dir() else []:
            if (entry / "state.json").exists():
                for args in (["kill", entry.name, "KILL"], ["delete", "--force", entry.name]):
                    subprocess.run(["runc", "--root", str(root), *args], capture_output=True, timeout=30)


def _remove_cgroup_tree(name: str, root: Path = Path("/sys/fs/cgroup")) -> None:
    """rmdir, deepest first, the cgroup `name` in every hierarchy (empty cgroups only: the kernel refuses others)."""
    for hierarchy in [root, *root.iterdir()] if root.is_dir() else []:
        top = hierarchy / name
        if not top.is_dir():
            continue
        for path in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            try:
                path.rmdir()
            except OSError:
                pass
        try:
            top.rmdir()
        except OSError:
            pass


def teardown(lab: str, graceful: bool = True) -> None:
    """Everything a run made, by name; safe to call again and for a lab that never came up."""
    from agent.executor.cgroups import remove_daemon_parent

    engine_ids = _node_engine_ids(lab)
    sock = run_dir(lab, "h1") / "shoal.sock"
    started = time.monotonic()
    if graceful and sock.exists():
        # Everything is about to go: SIGKILL the nodes at once (a node's pid 1 takes its whole pid namespace,
        # shoal's containers included, with it) rather than wait for five graceful daemon stops.
        try:
            compose(lab, "kill", timeout=120, check=False)
            compose(lab, "down", "-v", "--timeout", "0", timeout=180, check=False)
        except subprocess.TimeoutExpired:
            log("compose kill/down timed out; removing the containers by their runc root")
    compose_s = time.monotonic() - started
    _remove_dockerd_containers(lab)  # while dockerd's state is there: it names them
    lab_down(lab)  # dockerd, containerd, shims (in the namespace), mounts, the namespace, the directories
    log(f"down: compose kill + down {compose_s:.1f} s, lab down {time.monotonic() - started - compose_s:.1f} s")
    for engine_id in engine_ids:
        try:
            remove_daemon_parent(engine_id)
        except OSError:
            pass
    _remove_cgroup_tree(cgroup_parent(lab))


# ---- the whole run ---------------------------------------------------------------------------------------
@dataclass(slots=True)
class Report:
    lab: str
    nodes: list[NodeRow] = field(default_factory=list)
    node_ls: str = ""
    service: ServiceCheck | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    deps_image: str = ""  # how the dependencies image was had: loaded from the cache or built
    engine_ids: list[str] = field(default_factory=list)  # the nodes' shoal daemons (their cgroups: /shoal/<id[:12]>)

    def as_json(self) -> str:
        return json.dumps(asdict(self), indent=1)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_lab(name: str | None = None, keep: bool = False, timeout: float = 300.0) -> Report:
    lab = name or f"cmp{secrets.token_hex(3)}"
    report = Report(lab)
    started = time.monotonic()

    def lap(step: str) -> None:
        nonlocal started
        report.seconds[step] = round(time.monotonic() - started, 1)
        log(f"{step}: {report.seconds[step]} s")
        started = time.monotonic()

    # SIGTERM (a test's timeout, a CI cancel) unwinds through the finally below like an exception.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    key_existed = KEY_JSON.exists()
    try:
        prepared = prepare()
        lap("prepare")
        start_dockerd(lab)
        lap("dockerd")
        report.deps_image = build_images(lab, prepared)
        lap("build")
        compose(lab, "up", "-d", timeout=300)
        report.nodes = wait_cluster(lab, timeout)
        report.node_ls = node_exec(lab, "m1", "shoal", "node", "ls").stdout
        lap("cluster")
        report.service = check_service_example(lab)
        lap("service")
        return report
    finally:
        signal.signal(signal.SIGTERM, previous)
        if keep:
            log(f"kept: DOCKER_HOST={docker_env(lab)['DOCKER_HOST']}; "
                f"`scripts/compose_lab.sh down --name {lab}` removes it")
        else:
            report.engine_ids = _node_engine_ids(lab)
            teardown(lab)
            if not key_existed and KEY_JSON.exists():  # made by this run's dockerd: not ours to leave behind
                KEY_JSON.unlink()
                try:
                    KEY_JSON.parent.rmdir()
                except OSError:
                    pass
            lap("down")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/compose_lab.sh", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("prepare", help="base tarball, debs, wheels (cached) and the build context")
    p_run = sub.add_parser("run", help="prepare, dockerd, build, up, check, down")
    p_run.add_argument("--name", help="lab name (default cmp<hex>)")
    p_run.add_argument("--keep", action="store_true", help="leave the lab up (then `down --name LAB`)")
    p_run.add_argument("--timeout", type=float, default=300.0, help="seconds for the cluster to form")
    p_run.add_argument("--json", action="store_true", help="print the report as JSON")
    p_down = sub.add_parser("down", help="remove a run's lab, containers and cgroups")
    p_down.add_argument("--name", required=True)
    args = parser.parse_args(argv)

    if os.geteuid() != 0:
        print("compose lab: needs root (network namespaces, dockerd)", file=sys.stderr)
        return 2
    try:
        if args.command == "prepare":
            prepared = prepare()
            print(f"base {prepared.base}\ndeps context {prepared.deps_context}\ncontext {prepared.context}\n"
                  f"deps image {prepared.deps_tarball}{'' if prepared.deps_tarball.is_file() else ' (not built yet)'}")
            return 0
        if args.command == "down":
            teardown(args.name)
            return 0
        report = run_lab(args.name, args.keep, args.timeout)
    except ComposeLabError as e:
        print(f"compose lab: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:  # SIGINT, or SIGTERM through _interrupt: the teardown has run
        print(f"compose lab: interrupted ({e or 'SIGINT'}); what it made is removed (unless --keep)", file=sys.stderr)
        return 130
    if args.json:
        print(report.as_json())
        return 0
    print(report.node_ls, end="")
    service = report.service
    if service is None or not service.possible:
        print(f"service example: not possible yet ({service.detail if service else 'not run'})")
    else:
        print(f"service example: {'converged' if service.converged else 'did NOT converge'}\n{service.detail}")
    print(" ".join(f"{k} {v} s" for k, v in report.seconds.items()))
    return 0 if service is None or not service.possible or service.converged else 1


if __name__ == "__main__":
    sys.exit(main())
