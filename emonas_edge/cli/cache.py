"""``emonas-edge cache list|clear``: what the cache holds, and freeing it."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from ..errors import UserError
from .common import console


def _mb(n: int) -> str:
    return f"{n / 2**20:,.1f} MB"


# register() is long only because it holds this group's commands, each its own nested function (typer reads
# their signatures for the options); it attaches them to the app and does nothing else.
def register(app: typer.Typer) -> None:
    group = typer.Typer(help="What the cache ($EMONAS_EDGE_CACHE) holds; clear it.", no_args_is_help=True)
    app.add_typer(group, name="cache")

    @group.command("list")
    def list_(json_: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False):
        """Model exports, decoded datasets, micro clips, distillation targets: path and size of each."""
        from ..cache import cache_entries
        from ..fileio import cache_dir

        rows = cache_entries()
        if json_:
            console.print_json(json.dumps({"cache": str(cache_dir()), "entries": rows}))
            return
        t = Table(title=f"cache {cache_dir()}", title_justify="left")
        for col in ("kind", "entry", "size"):
            t.add_column(col)
        for r in rows:
            what = ", ".join(r.get("files", [])) or r["path"].rsplit("/", 1)[-1]
            t.add_row(r["kind"], what, _mb(r["bytes"]))
        console.print(t)
        console.print(f"{len(rows)} entries, {_mb(sum(r['bytes'] for r in rows))}", highlight=False)

    @group.command("clear")
    def clear(
        kind: Annotated[
            str, typer.Option(help="onnx | data | micro | distill | all: what to delete (rebuilt on use).")
        ] = "all",
    ):
        """Delete cache entries; each is rebuilt the next time it is needed."""
        from ..cache import KINDS, clear_cache

        if kind != "all" and kind not in KINDS:
            raise UserError(f"unknown cache kind {kind!r} (choose from: {', '.join(KINDS)}, all)")
        removed, freed = clear_cache(KINDS if kind == "all" else (kind,))
        console.print(f"removed {removed} entries, {_mb(freed)} freed", highlight=False)
