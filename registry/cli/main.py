"""The `registry` command: parse arguments, call the API, print. Nothing else lives here."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from registry.errors import RegistryError
from registry.version import __version__

F = TypeVar("F", bound=Callable[..., Any])
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
    "api": ("registry.cli.commands", "api_command"),
    "archive": ("registry.cli.commands", "archive"),
    "check": ("registry.cli.commands", "check"),
    "codeowners": ("registry.cli.commands", "codeowners"),
    "convert": ("registry.cli.commands", "convert_command"),
    "demo": ("registry.cli.commands", "demo"),
    "deprecate": ("registry.cli.commands", "deprecate"),
    "fetch": ("registry.cli.commands", "fetch_command"),
    "gc": ("registry.cli.commands", "gc_command"),
    "import": ("registry.cli.commands", "import_group"),
    "init": ("registry.cli.commands", "init"),
    "keys": ("registry.cli.commands", "keys_group"),
    "log": ("registry.cli.read", "log"),
    "ls": ("registry.cli.read", "ls_command"),
    "manifest": ("registry.cli.read", "manifest"),
    "mcp": ("registry.cli.commands", "mcp_command"),
    "promote": ("registry.cli.commands", "promote"),
    "pull": ("registry.cli.commands", "pull_command"),
    "record-approvals": ("registry.cli.audit", "record_approvals"),
    "register": ("registry.cli.commands", "register"),
    "rollback": ("registry.cli.commands", "rollback"),
    "scan": ("registry.cli.commands", "scan_command"),
    "show": ("registry.cli.read", "show"),
    "sign": ("registry.cli.commands", "sign_command"),
    "site": ("registry.cli.commands", "site"),
    "validate": ("registry.cli.read", "validate"),
    "verify": ("registry.cli.commands", "verify_command"),
    "verify-history": ("registry.cli.audit", "verify_history"),
    "workflow": ("registry.cli.commands", "workflow_command"),
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


def main(argv: list[str] | None = None) -> None:
    """Entry point: every error is handled here, once."""
    args = sys.argv[1:] if argv is None else argv
    wants_json = "--json" in args
    show_traceback = "--traceback" in args
    try:
        cli.main(args=args, prog_name="registry", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        if wants_json:
            _print_json({"error": exc.format_message()})
        else:
            exc.show()
        sys.exit(exc.exit_code)
    except RegistryError as exc:
        if show_traceback:
            raise
        if wants_json:
            _print_json({"error": str(exc)})
        else:
            for line in str(exc).splitlines():
                echo(f"error: {line}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        if show_traceback:
            raise
        echo(f"internal error: {type(exc).__name__}: {exc}\n"
             "This is a bug; run again with --traceback and report it.", err=True)
        sys.exit(3)
