"""Option help that reads at 80 columns.

typer lays each option out in six columns (long name, short name, ``--no-`` name, its short form, type,
help); with names like ``--keep-epochs`` / ``--no-keep-epochs`` the help column shrank to ~20 characters at
80 columns, a word per line. Here each option is two columns: its names and type, wrapping at the spaces
between them within at most a third of the width, and the help in the rest. The help text itself (defaults,
``[required]``) is still typer's own. Applied only where typer has the function this replaces; otherwise
typer's layout stays (the help test at ``COLUMNS=80`` would then say so).
"""

from __future__ import annotations

from typing import Any


def _names(param: Any, ctx: Any, rich_utils: Any, starred: bool):
    from rich.text import Text

    text = Text()
    if param.required:
        text.append("* ", style=rich_utils.STYLE_REQUIRED_SHORT)
    elif starred:  # names line up under a panel's required ones
        text.append("  ")
    opts = sorted(param.opts, key=lambda o: (not o.startswith("--"), o))  # long name first
    if isinstance(param, rich_utils.TyperArgument):
        opts = [param.display_name_raw + ("..." if param.metavar is None and param.nargs != 1 else "")]
    text.append(", ".join(opts), style=rich_utils.STYLE_OPTION)
    for secondary in param.secondary_opts:
        text.append(" / ")
        text.append(secondary, style=rich_utils.STYLE_NEGATIVE_OPTION)
    kind = param.display_type_rich(ctx=ctx)
    if kind:
        text.append(f" {kind}", style=rich_utils.STYLE_TYPES)
    return text


def _options_panel(*, name: str, params: list, ctx: Any, markup_mode: Any, console: Any) -> None:
    from rich.panel import Panel
    from rich.table import Table
    from typer import rich_utils

    if not params:
        return
    table = Table(show_header=False, box=None, expand=True, pad_edge=False, padding=(0, 1))
    table.add_column(max_width=max(16, console.width // 3), overflow="fold")
    table.add_column(ratio=1)
    starred = any(param.required for param in params)
    for param in params:
        help_text = rich_utils._get_parameter_help(param=param, ctx=ctx, markup_mode=markup_mode)
        table.add_row(_names(param, ctx, rich_utils, starred), help_text)
    console.print(
        Panel(
            table,
            border_style=rich_utils.STYLE_OPTIONS_PANEL_BORDER,
            title=name,
            title_align=rich_utils.ALIGN_OPTIONS_PANEL,
        )
    )


def install() -> None:
    """Replace typer's option panel with the two-column one (once, at start-up, before any help renders)."""
    from typer import rich_utils

    if callable(getattr(rich_utils, "_print_options_panel", None)) and hasattr(rich_utils, "_get_parameter_help"):
        rich_utils._print_options_panel = _options_panel
