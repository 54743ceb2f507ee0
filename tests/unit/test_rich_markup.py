"""User and config text printed through rich is text, never markup (`[[hosts]]`, `[red]`)."""
from __future__ import annotations


def test_phase_lines_print_user_text_literally_never_as_rich_markup():
    import io

    from rich.console import Console

    from fleet.cli.render import RichEvents
    buf = io.StringIO()
    events = RichEvents(stream=buf)
    events.console, events.plain = Console(file=buf, force_terminal=True, width=200), False
    events.phase("run", "echo [red]x[/] [[hosts]]")
    events.close()
    assert "echo [red]x[/] [[hosts]]" in buf.getvalue()
