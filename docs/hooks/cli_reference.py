"""mkdocs hook: render ``--help`` of every ``tradesim`` command into docs/cli.md at build time.

The reference is generated from the typer app (``tradesim.cli:app``) through its click-style
help formatter at a fixed width, with typer's rich boxes off (typer >= 0.29 vendors click as
``typer._click``, so commands are walked by duck typing). It cannot drift from the code: a
renamed command or flag changes the page, and a command whose help fails fails the build.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import typer
from mkdocs.exceptions import PluginError

MARKER = "<!-- cli-reference -->"
WIDTH = 80  # the content column of the readthedocs theme
PAGE = "cli.md"


def _plain(command: Any) -> Any:
    """Turn off typer's rich boxes for this (freshly built) command: plain click help text."""
    if hasattr(command, "rich_markup_mode"):
        command.rich_markup_mode = None
    return command


def walk(command: Any, name: str, parent: Any = None) -> Iterator[tuple[str, str, Any]]:
    """Yield ``(full name, help text, command)`` for ``command`` and every visible subcommand."""
    ctx = command.context_class(_plain(command), info_name=name, parent=parent,
                                terminal_width=WIDTH, max_content_width=WIDTH)
    yield ctx.command_path, command.get_help(ctx).rstrip(), command
    if hasattr(command, "list_commands"):
        for sub in command.list_commands(ctx):
            child = command.get_command(ctx, sub)
            if child is not None and not child.hidden:
                yield from walk(child, sub, ctx)


def render() -> str:
    """The markdown of every command's help, in the app's order, one section per command."""
    from tradesim.cli import app

    root = typer.main.get_command(app)
    out: list[str] = []
    for path, text, command in walk(root, "tradesim"):
        depth = max(1, path.count(" "))  # tradesim and its commands: ##, subcommands: ###
        summary = " ".join((command.get_short_help_str(limit=300) or "").split())
        out.append(f"{'#' * (depth + 1)} `{path}`\n")
        if summary:
            out.append(f"{summary}\n")
        out.append(f"```text\n{text}\n```\n")
    return "\n".join(out)


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    """Replace the marker in docs/cli.md with the rendered help of every command."""
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        raise PluginError(f"docs/{PAGE} lost its '{MARKER}' line: put it back where the "
                          "generated command reference belongs")
    try:
        body = render()
    except Exception as exc:  # a command that cannot render its help is a broken reference
        raise PluginError(f"could not render the CLI reference from tradesim.cli:app: {exc!r}") \
            from exc
    return markdown.replace(MARKER, body)
