"""shoal/engine/startfast.py: a plain container start resolves its mounts and spec extras without a thread hop;
one with mounts, --init, --device or --privileged still reads the host in a thread; the user and groups of its
process are read from its image in a thread once, not at every start."""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from agent.executor.spec import Mount
from shoal.engine import createopts, startfast


class _CountingExecutor(ThreadPoolExecutor):
    """The loop's default executor, counting what is handed to a thread (to_thread wraps it in a context run)."""

    def __init__(self) -> None:
        super().__init__(max_workers=1)
        self.calls: list[str] = []

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        inner = fn.args[0] if isinstance(fn, functools.partial) and fn.args else fn  # partial(context.run, f)
        self.calls.append(getattr(inner, "__name__", repr(inner)))
        return super().submit(fn, *args, **kwargs)


def _on_loop(coro_fn: Any) -> tuple[Any, list[str]]:
    ex = _CountingExecutor()

    async def run() -> Any:
        asyncio.get_running_loop().set_default_executor(ex)
        return await coro_fn()
    return asyncio.run(run()), ex.calls


def test_a_container_without_mounts_gets_none_without_a_thread() -> None:
    record = SimpleNamespace(mounts=[])
    result, calls = _on_loop(lambda: startfast.mounts_at_start(None, record, Path("/nonexistent")))
    assert (result, calls) == ([], [])


def test_a_container_with_a_mount_resolves_it_in_a_thread(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    record = SimpleNamespace(mounts=[{"type": "bind", "source": str(tmp_path), "destination": "/data", "rw": True}])
    result, calls = _on_loop(lambda: startfast.mounts_at_start(None, record, tmp_path))
    assert calls == ["at_start"]
    assert [(m.source, m.readonly) for m in result] == [(str(tmp_path), False)]


def test_plain_run_options_give_the_same_extras_without_a_thread() -> None:
    options = createopts.RunOptions(sysctls={"net.ipv4.ip_forward": "1"})
    (extras, mounts), calls = _on_loop(lambda: startfast.spec_extras(options))
    assert calls == []
    assert (extras, mounts) == createopts.spec_extras(options)


def test_init_is_looked_up_in_a_thread() -> None:
    options = createopts.RunOptions(init=True)
    (_extras, mounts), calls = _on_loop(lambda: startfast.spec_extras(options))
    assert calls == ["spec_extras"]
    assert [m.destination for m in mounts] == [createopts.INIT_PATH_IN_CONTAINER]
    assert isinstance(mounts[0], Mount)


def test_a_starts_user_and_groups_are_read_from_its_image_once(tmp_path: Path) -> None:
    from shoal.engine.helpers import image_process_user

    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "group").write_text("wheel:x:10:root\n")
    (tmp_path / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")

    async def twice() -> list[Any]:
        return [await image_process_user("", ["wheel"], tmp_path) for _ in range(2)]
    results, calls = _on_loop(twice)
    assert (results, calls) == ([(0, 0, (0, 10)), (0, 0, (0, 10))], ["_user_files_or_why"])
