"""Reference text generated from the code, so the README cannot drift from it (a test compares them)."""

from __future__ import annotations

from mlhub.config import Settings, env_name


def settings_table() -> str:
    """The configuration table of README.md, rendered from :class:`~mlhub.config.Settings`."""
    lines = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        default = field.default
        shown = "unset" if default is None else f"`{default}`"
        if field.annotation is not None and "SecretStr" in str(field.annotation):
            shown += " (secret)"
        lines.append(f"| `{env_name(name)}` | {shown} | {field.description or ''} |")
    return "\n".join(lines)
