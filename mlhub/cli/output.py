"""Rendering for the CLI: rich tables for people, ``--json`` for programs."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, is_dataclass
from datetime import datetime
from enum import Enum
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

# Piped output (grep, files, CI logs) gets a wide console so tables are never cut to 80 columns.
console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 240)
err_console = Console(stderr=True, soft_wrap=True)


def _default(o: Any) -> Any:
    if isinstance(o, datetime):
        return o.isoformat()
    if isinstance(o, Enum):
        return o.value
    if is_dataclass(o):
        return asdict(o)
    return str(o)


def to_plain(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=_default))


def print_json(obj: Any) -> None:
    # plain print: rich would wrap long lines and break the JSON for programs reading it
    print(json.dumps(obj, default=_default, indent=2))


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, str) and len(v) >= 19 and v[4] == "-" and v[10] == "T":
        try:  # an ISO timestamp from to_plain: show it to the second, like a datetime
            v = datetime.fromisoformat(v)
        except ValueError:
            return v
    if isinstance(v, datetime):
        return v.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(v, float):
        return f"{v:.2f}"
    if isinstance(v, dict):
        return ", ".join(f"{k}={val}" for k, val in v.items()) or "-"
    return str(v)


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str], title: str | None = None) -> None:
    table = Table(title=title, show_lines=False)
    for c in columns:
        table.add_column(c, overflow="fold")  # never cut a value short with '…'; wrap it
    for r in rows:
        # Text, not str: user-supplied strings must never be read as rich markup
        table.add_row(*[Text(_cell(r.get(c))) for c in columns], style=r.get("_style"))
    console.print(table)
