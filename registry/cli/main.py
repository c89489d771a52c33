"""The `registry` command: parse arguments, call the API, print. Nothing else lives here."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from registry.errors import RegistryError, UsageError
from registry.version import __version__

F = TypeVar("F", bound=Callable[..., Any])
INTERNAL_ERROR = 3  # the exit code of a bug
_JSON_FLAG = False


def _print_json(data: Any) -> None:
    # Indented for a person at a terminal; compact (and C-encoded, much faster) when piped.
    indent = 2 if sys.stdout.isatty() else None
    click.echo(json.dumps(data, indent=indent, default=str))


def echo(text: str = "", err: bool = False, nl: bool = True) -> None:
    """Print text for people: control and bidi-override characters neutralised (registry.safetext).
    Everything human-readable the command prints goes through here; JSON does not."""
    from registry.files.safetext import printable

    click.echo(printable(text), err=err, nl=nl)


def json_option(func: F) -> F:
    def remember(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
        global _JSON_FLAG
        _JSON_FLAG = _JSON_FLAG or value
        return value

    return click.option("--json", "as_json", is_flag=True, callback=remember, expose_value=True,
                        is_eager=True, help="Print machine-readable JSON.")(func)


def _open() -> Any:
    import registry

    return registry.open(Path.cwd())


# Commands live in their own modules and are imported only when they run: a read
# command must not pay for defining forty others (see docs/benchmarks.md).
LAZY_COMMANDS: dict[str, tuple[str, str]] = {
    "api": ("registry.cli.integrations", "api_command"),
    "archive": ("registry.cli.changes", "archive"),
    "check": ("registry.cli.gates", "check"),
    "codeowners": ("registry.cli.changes", "codeowners"),
    "convert": ("registry.cli.gates", "convert_command"),
    "demo": ("registry.cli.integrations", "demo"),
    "deprecate": ("registry.cli.changes", "deprecate"),
    "evaluate": ("registry.cli.evaluate", "evaluate_command"),
    "export": ("registry.cli.export", "export_command"),
    "fetch": ("registry.cli.gates", "fetch_command"),
    "gc": ("registry.cli.changes", "gc_command"),
    "import": ("registry.cli.integrations", "import_group"),
    "init": ("registry.cli.changes", "init"),
    "keys": ("registry.cli.signing", "keys_group"),
    "log": ("registry.cli.read", "log"),
    "ls": ("registry.cli.read", "ls_command"),
    "manifest": ("registry.cli.read", "manifest"),
    "mcp": ("registry.cli.integrations", "mcp_command"),
    "promote": ("registry.cli.changes", "promote"),
    "pull": ("registry.cli.serving", "pull_command"),
    "record-approvals": ("registry.cli.audit", "record_approvals"),
    "register": ("registry.cli.changes", "register"),
    "rollback": ("registry.cli.changes", "rollback"),
    "scan": ("registry.cli.gates", "scan_command"),
    "serve": ("registry.cli.serve", "serve_command"),
    "served": ("registry.cli.served", "served_command"),
    "show": ("registry.cli.read", "show"),
    "sign": ("registry.cli.signing", "sign_command"),
    "site": ("registry.cli.integrations", "site"),
    "validate": ("registry.cli.read", "validate"),
    "verify": ("registry.cli.signing", "verify_command"),
    "verify-history": ("registry.cli.audit", "verify_history"),
    "workflow": ("registry.cli.changes", "workflow_command"),
}


class LazyGroup(click.Group):
    """click's documented lazy-loading group: a command's module is imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in LAZY_COMMANDS:
            import importlib

            module, attribute = LAZY_COMMANDS[cmd_name]
            command = getattr(importlib.import_module(module), attribute)
            assert isinstance(command, click.Command)
            return command
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="registry")
@click.option("--traceback", is_flag=True, help="Show a Python traceback on errors (for bug reports).")
def cli(traceback: bool) -> None:
    """A GitOps model registry: model cards and stages in git, weights in DVC.

    A pull request is a request to register or promote; merging it is the
    promotion; git history is the audit log.
    """


# -- More commands go above this line (each calls into its own module). --


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


def _where(branch: str | None) -> str:
    """Where a change was committed, for the line that reports it."""
    return f"on branch {branch}" if branch else "on the current branch"


def _next_step(branch: str | None, pushed: bool) -> None:
    """After a commit on a new branch that was not pushed: what to do next."""
    if branch and not pushed:
        echo(f"Next: git push -u origin {branch}, then open a pull request")


def _version_ref(ref: str) -> tuple[str, str]:
    from registry.files.names import parse_ref

    name, version = parse_ref(ref)
    if version is None:
        raise UsageError(f"{ref}: give a version, NAME@VERSION (e.g. {name}@1.0.0)")
    return name, version


@contextlib.contextmanager
def _progress() -> Iterator[Callable[[str, int, int], None] | None]:
    """A progress bar on a terminal for long copies; nothing when piped."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    from registry.files.safetext import printable

    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), console=Console(stderr=True), transient=True,
                  # Not through rich: DVC initialises colorama inside this block, and its exit-time
                  # reset would then be printed by rich as a visible "[0m".
                  redirect_stdout=False, redirect_stderr=False) as bar:
        tasks: dict[str, Any] = {}

        def update(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(escape(printable(name)), total=total)
            bar.update(tasks[name], completed=done)

        yield update


def main(argv: list[str] | None = None) -> None:
    """Entry point: every error is handled here, once.

    Exit codes: 0 success, 1 a failed check or a user error (RegistryError), 2 a usage
    error, 3 a bug (anything else), 130 interrupted. --traceback prints the traceback of any
    error first; with --json the error is `{"error": message}` on stdout.
    """
    global _JSON_FLAG
    _JSON_FLAG = False  # set by a command's --json (main may run many times in one process)
    args = sys.argv[1:] if argv is None else argv
    show_traceback = "--traceback" in args
    try:
        cli.main(args=args, prog_name="registry", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        _fail(exc.format_message(), exc.exit_code, args, show_traceback, click_error=exc)
    except RegistryError as exc:
        _fail(str(exc), exc.exit_code, args, show_traceback)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # the one place a bug is caught: reported as one, exit 3
        _fail(f"internal error: {type(exc).__name__}: {exc}", INTERNAL_ERROR, args, show_traceback,
              hint="" if show_traceback else "This is a bug; run again with --traceback and report it.")


def _fail(message: str, code: int, args: list[str], show_traceback: bool, *,
          click_error: click.ClickException | None = None, hint: str = "") -> NoReturn:
    """Report the error being handled and exit with code."""
    if show_traceback:
        import traceback

        click.echo(traceback.format_exc().rstrip("\n"), err=True)
    if _JSON_FLAG or "--json" in args:
        _print_json({"error": message})
    elif click_error is not None:
        click_error.show()
    else:
        prefix = "" if code == INTERNAL_ERROR else "error: "
        for line in message.splitlines():
            echo(f"{prefix}{line}", err=True)
        if hint:
            echo(hint, err=True)
    sys.exit(code)
