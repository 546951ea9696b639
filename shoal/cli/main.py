"""Entry point of `shoal` and `python -m shoal`: run a command, map failures to exit codes.

Tries shoal.cli.fast first (list commands, run and service create without importing click; back to click when
the fast path meets what only click handles), then the click tree in
shoal.cli.root; errors from shoal.client become docker's messages and exit codes.
"""
from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # not `from typing import ...`: typing costs ~3 ms of CLI start-up

from shoal.cli.common import Failed, Globals, err
from shoal.cli.fast import NotFast, parse_fast
from shoal.cli.format import UsageError
from shoal.client import ClientError, DaemonError

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from shoal.client import Client


def _run(argv: list[str]) -> int:
    import click

    from shoal.cli.root import cli

    try:
        result = cli.main(args=argv, prog_name="shoal", standalone_mode=False)
    except click.UsageError as exc:
        exc.show()
        # A bare group (`shoal network`) shows its help; docker exits 0 there, 125 on bad flags.
        return 0 if type(exc).__name__ == "NoArgsIsHelpError" else 125
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.Abort:
        err("Aborted!")
        return 1
    return result if isinstance(result, int) else 0


def _run_fast(argv: list[str], host: str | None, runner: Callable[[Client, dict[str, Any]], None],
              params: dict[str, Any]) -> int:
    try:
        runner(Globals(host).client(), params)
    except NotFast:
        return _run(argv)
    return 0


def main(argv: list[str] | None = None) -> None:
    """Run the CLI with `argv` (default sys.argv[1:]) and exit with docker's exit codes."""
    args = list(sys.argv[1:] if argv is None else argv)
    fast = parse_fast(args)
    try:
        code = _run(args) if fast is None else _run_fast(args, *fast)
    except Failed as exc:
        code = exc.code
    except DaemonError as exc:
        err(f"Error response from daemon: {exc.message}")
        code = 1
    except (ClientError, UsageError) as exc:  # DaemonUnreachable included
        err(str(exc))
        code = 1
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:
        code = 1
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`| head`): exit quietly, as a Go program would.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    if fast is not None and argv is None:
        # A list command run from the shell holds nothing that needs cleaning up; skipping
        # the interpreter's teardown saves ~3 ms, a sixth of the command's time.
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)

