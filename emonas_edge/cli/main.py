"""The ``emonas-edge`` console script.

Commands are thin layers over library functions. This module maps failures to exit codes:
bad input -> one line on stderr, exit 2; a verification that failed -> its table, exit 1.
Unexpected exceptions keep their traceback: those are bugs to report.
"""

from __future__ import annotations

import sys

import typer
from rich.markup import escape

from .. import __version__
from ..deps import missing_extra
from ..errors import CheckFailed, UserError
from ..fileio import Terminated, terminate_as_interrupt
from .common import console, err_console

app = typer.Typer(
    name="emonas-edge",
    help="Searched facial-expression networks -> verified ONNX / TensorRT artifacts -> real-time edge pipeline.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


@app.callback(invoke_without_command=True)
def _root(version: bool = typer.Option(False, "--version", help="Print the version and exit.")):
    if version:
        console.print(f"emonas-edge {__version__}")
        raise typer.Exit(0)


from . import cache, models, pipeline, profile, search, train  # noqa: E402

models.register(app)
train.register(app)
pipeline.register(app)
profile.register(app)
search.register(app)
cache.register(app)


def _readable_help(command) -> None:
    """Boolean options are flags (``--json``, ``--track/--no-track``): help shows no ``<bool>`` value for them,
    which read as if ``--json true`` were expected. Option help uses the two-column layout of
    :mod:`.helpfmt` (readable at 80 columns), installed only when some help is drawn: it costs an import."""
    for sub in getattr(command, "commands", {}).values():
        _readable_help(sub)
    for param in command.params:
        if getattr(param, "is_flag", False):
            param.metavar = ""
    made, drawn = command.get_help_option, command.format_help  # --help is made on demand, not held in params

    def help_option(ctx):
        option = made(ctx)
        if option is not None:
            option.metavar = ""
        return option

    def format_help(ctx, formatter):
        from .helpfmt import install

        install()
        return drawn(ctx, formatter)

    command.get_help_option, command.format_help = help_option, format_help


def _one_line(msg: object) -> str:
    """Messages quote user input (file names, op names): never let it be read as Rich markup."""
    return escape(" ".join(str(msg).split()))


def main(argv: list[str] | None = None) -> None:
    terminate_as_interrupt()
    try:
        # Standalone mode: typer reports its own usage errors (exit 2) and Ctrl-C; ours pass through.
        command = typer.main.get_command(app)
        _readable_help(command)
        command(args=argv, prog_name="emonas-edge")
    except UserError as e:
        err_console.print(f"[bold red]error:[/] {_one_line(e)}", soft_wrap=True)
        sys.exit(e.exit_code)
    except CheckFailed as e:
        if e.table:
            for k, v in e.table.items():
                err_console.print(f"  {k}: {_one_line(v)}", soft_wrap=True)
        err_console.print(f"[bold red]check failed:[/] {_one_line(e)}", soft_wrap=True)
        sys.exit(e.exit_code)
    except OSError as e:  # the machine refused (a full disk, a read-only folder, a vanished device): not a bug
        where = f"{e.filename}: " if e.filename else ""
        err_console.print(f"[bold red]error:[/] {_one_line(where + (e.strerror or str(e)))}", soft_wrap=True)
        sys.exit(2)
    except (Terminated, KeyboardInterrupt) as e:  # KeyboardInterrupt: outside typer's own handling
        _stopped(e)
    except ImportError as e:  # a signal that lands inside a library's import can surface as its ImportError
        cause = e.__cause__ or e.__context__
        if isinstance(cause, KeyboardInterrupt | Terminated):
            _stopped(cause)
        missing = missing_extra(e)  # a runtime-only install reaching for PyTorch
        if missing is None:
            raise
        err_console.print(f"[bold red]error:[/] {_one_line(missing)}", soft_wrap=True)
        sys.exit(missing.exit_code)
    except SystemExit as e:
        if e.code == 130:  # typer's exit for a KeyboardInterrupt inside a command says nothing
            err_console.print("interrupted")
        raise


def _stopped(signal_exc: BaseException) -> None:
    """SIGTERM: "terminated", exit 143; Ctrl-C: "interrupted", exit 130 (the shells' 128 + signal number)."""
    terminated = isinstance(signal_exc, Terminated)
    err_console.print("terminated" if terminated else "interrupted")
    sys.exit(143 if terminated else 130)


if __name__ == "__main__":
    main()
