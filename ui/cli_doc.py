"""Generates docs/cli.md from `firstline --help` and every `firstline COMMAND --help`, so the reference never drifts."""

from __future__ import annotations

from pathlib import Path

import click
from click.testing import CliRunner

DOC = Path(__file__).resolve().parent.parent / "docs" / "cli.md"
WIDTH = 100  # help text wrapped as on a 100-column terminal, whatever terminal runs `make docs`


def commands(group: click.Command, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path under `group`, depth first in name order: (), ('ask',), ('kb',), ('kb', 'ingest'), ..."""
    out = [path]
    if isinstance(group, click.Group):
        for name in sorted(group.commands):
            out += commands(group.commands[name], (*path, name))
    return out


def help_text(main: click.Command, path: tuple[str, ...]) -> str:
    """What `firstline PATH --help` prints."""
    result = CliRunner().invoke(main, [*path, "--help"], prog_name="firstline", terminal_width=WIDTH)
    if result.exit_code != 0:
        raise RuntimeError(f"firstline {' '.join(path)} --help failed: {result.output}")
    return result.output


def render() -> str:
    """The Markdown text of docs/cli.md."""
    from ui.cli.main import main

    lines = [
        "# Command line",
        "",
        "Generated from the code by `make docs`; do not edit by hand. The stable names and JSON keys are",
        "listed in the README (Operations); this page is what `firstline --help` and every",
        "`firstline COMMAND --help` print.",
        "",
    ]
    for path in commands(main):
        title = " ".join(("firstline", *path))
        lines += [f"## `{title}`", "", "```text", help_text(main, path).rstrip("\n"), "```", ""]
    return "\n".join(lines)


def main() -> None:
    DOC.write_text(render(), encoding="utf-8")
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
