"""``mlhub ui``: where the web console answers, opened in a browser where a desktop is present."""

from __future__ import annotations

import os
import sys

import typer

from mlhub.cli.context import STATE
from mlhub.cli.output import console, print_json


def has_display() -> bool:
    """A desktop a browser can open on: macOS, Windows, or an X11/Wayland display."""
    return sys.platform in ("darwin", "win32") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def ui(no_open: bool = typer.Option(False, "--no-open", help="Only print the address."),
       json_: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Print the web console's address (served by `mlhub start` under /ui) and open it where a desktop is present.
    Log in with your tenant's API key."""
    from serve_apps.control import console_url

    url = console_url(STATE.settings)
    opened = False
    if not no_open and not json_ and has_display():
        import webbrowser

        opened = webbrowser.open(url)
    if json_:
        print_json({"url": url, "opened": opened})
        return
    console.print(url, highlight=False, markup=False, soft_wrap=True)
    if opened:
        console.print("opened in your browser; log in with your API key", highlight=False)
