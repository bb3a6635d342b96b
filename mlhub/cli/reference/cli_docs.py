"""The configuration table (from Settings) and the CLI reference and overview (from the Typer app)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from mlhub.cli.reference.markdown import (
    GENERATED,
    _anchor,
    _code,
    _first_paragraph,
    _table,
)
from mlhub.config import Settings, env_name

# ---------------------------------------------------------------------------------------------- configuration


def settings_table() -> str:
    """The configuration table of README.md, rendered from :class:`~mlhub.config.Settings`."""
    lines = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        shown = "unset" if default is None else f"`{default}`"
        if field.annotation is not None and "SecretStr" in str(field.annotation):
            shown += " (secret)"
        lines.append(f"| `{env_name(name)}` | {shown} | {field.description or ''} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------- CLI


@dataclass(frozen=True)
class CliCommand:
    path: tuple[str, ...]  # ("mlhub", "models", "promote")
    command: Any  # a click Command or Group
    context: Any  # its click Context (parents chained), for usage and type display

    @property
    def name(self) -> str:
        return " ".join(self.path)

    @property
    def is_group(self) -> bool:
        return hasattr(self.command, "commands")


def cli_commands() -> list[CliCommand]:
    """The root group and every command and sub-command under it, depth first, in registration order."""
    import typer

    from mlhub.cli.main import app

    root = typer.main.get_command(app)
    out: list[CliCommand] = []

    def walk(command: Any, path: tuple[str, ...], parent: Any) -> None:
        ctx = type(root).context_class(command, info_name=path[-1], parent=parent)
        out.append(CliCommand(path, command, ctx))
        for name, sub in getattr(command, "commands", {}).items():
            if not sub.hidden:
                walk(sub, (*path, name), ctx)

    walk(root, ("mlhub",), None)
    return out


def _command_summary(command: Any) -> str:
    return _first_paragraph(command.short_help or command.help)


def _param_names(param: Any) -> str:
    if param.param_type_name == "argument":
        return (param.metavar or param.name or "").upper()
    names = ", ".join(param.opts)
    if param.secondary_opts:
        names += " / " + ", ".join(param.secondary_opts)
    return names


def _param_type(param: Any, ctx: Any) -> str:
    if getattr(param, "is_flag", False) or getattr(param, "count", False):
        return "flag"
    try:
        shown = param.display_type(ctx)
    except Exception:  # noqa: BLE001 - a parameter type typer cannot name: fall back to its python annotation
        shown = str(getattr(param, "type_descriptor", param).__class__.__name__)
    shown = shown.strip("<>").removesuffix(" range")  # the range itself goes in the help column
    return f"{shown} (repeatable)" if param.multiple else shown


def _plain_default(value: Any) -> str:
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ", ".join(_plain_default(v) for v in value)
    return str(value)


def _param_default(param: Any) -> str:
    if param.required:
        return "required"
    if isinstance(param.show_default, str):
        return param.show_default
    default = param.default
    if callable(default):
        return "(computed)"
    if default is None or (isinstance(default, list | tuple) and not default):
        return ""
    return _code(_plain_default(default))


def _param_help(param: Any) -> str:
    parts = [" ".join((getattr(param, "help", None) or "").split())]
    low, high = getattr(param, "min", None), getattr(param, "max", None)
    if low is not None and high is not None:
        parts.append(f"[{low} to {high}]")
    elif low is not None:
        parts.append(f"[at least {low}]")
    elif high is not None:
        parts.append(f"[at most {high}]")
    if param.envvar:
        envvars = [param.envvar] if isinstance(param.envvar, str) else list(param.envvar)
        parts.append("env: " + ", ".join(_code(e) for e in envvars))
    return " ".join(p for p in parts if p)


def _usage(cmd: CliCommand) -> str:
    pieces = cmd.command.collect_usage_pieces(cmd.context)
    return " ".join([cmd.name, *pieces])


def _params_table(cmd: CliCommand) -> list[str]:
    params = [p for p in cmd.command.params if not getattr(p, "hidden", False)]
    if not params:
        return []
    rows = [[_code(_param_names(p)), _param_type(p, cmd.context), _param_default(p), _param_help(p)]
            for p in params]
    return _table(["argument / option", "type", "default", "help"], rows)


def cli_reference() -> str:
    """``docs/reference/cli.md``: every command and sub-command with its arguments, options, types and defaults."""
    commands = cli_commands()
    root = commands[0]
    lines = ["# CLI reference", "", GENERATED, "",
             _first_paragraph(root.command.help), "",
             "Global options go before the command (`mlhub --api-key mlh_... jobs`). Every command also takes "
             "`--help`. Errors are one line on stderr (`error: ...`) with a non-zero exit status; `--debug` adds "
             "the traceback.", "",
             f"Usage: {_code(_usage(root))}", ""]
    lines += _params_table(root)
    lines += ["", "## Commands", ""]
    for cmd in commands[1:]:
        depth = len(cmd.path) - 2
        lines.append(f"{'  ' * depth}- [{cmd.name}](#{_anchor(cmd.name)}): {_command_summary(cmd.command)}")
    for cmd in commands[1:]:
        lines += ["", f"## {cmd.name}", ""]
        help_text = "\n".join(line.rstrip() for line in (cmd.command.help or "").strip().splitlines()
                              if line.strip() != "\b")
        if help_text:
            lines += [help_text, ""]
        lines.append(f"Usage: {_code(_usage(cmd))}")
        if cmd.is_group:
            lines += ["", "Sub-commands: " + ", ".join(
                f"[{name}](#{_anchor(f'{cmd.name} {name}')})" for name, sub in cmd.command.commands.items()
                if not sub.hidden) + "."]
        table = _params_table(cmd)
        if table:
            lines += ["", *table]
    return "\n".join(lines) + "\n"


def cli_overview() -> str:
    """README's compact table (between the ``cli`` markers): each top-level command or group and what it does."""
    rows = []
    for cmd in cli_commands()[1:]:
        if len(cmd.path) != 2:
            continue
        summary = _command_summary(cmd.command)
        if cmd.is_group:
            subs = ", ".join(_code(n) for n, s in cmd.command.commands.items() if not s.hidden)
            summary = f"{summary} Sub-commands: {subs}."
        rows.append([f"[{_code(cmd.name)}](docs/reference/cli.md#{_anchor(cmd.name)})", summary])
    return "\n".join(_table(["command", "what it does"], rows))
