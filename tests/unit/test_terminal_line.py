"""An experiment's log lines reach a terminal (the run's own, `fleet logs`, `fleet attach`, possibly
of a teammate's run in a shared state): their colours and progress bars pass, but no other escape
sequence does (a red-team finding: OSC 52 set the reader's clipboard, others clear the screen)."""
from __future__ import annotations

from fleet.cli.render import JsonEvents, RichEvents
from fleet.render.text import terminal_line

HOSTILE = "\x1b[31mred\x1b[0m \x1b]52;c;Y3VybCBldmlsIHwgc2g=\x07 \x1b[2J\x1b[H 10%|##   |\r 20%|####  |\tend"


def test_colours_and_progress_bars_pass_and_nothing_else_is_obeyed():
    shown = terminal_line(HOSTILE)
    assert shown.startswith("\x1b[31mred\x1b[0m ")
    assert "^[]52;c;Y3VybCBldmlsIHwgc2g=^G" in shown and "^[[2J^[[H" in shown
    assert "\r 20%" in shown and "\tend" in shown
    rest = shown.replace("\x1b[31m", "").replace("\x1b[0m", "")
    assert "\x1b" not in rest and "\x07" not in rest
    assert terminal_line("plain line") == "plain line"


def test_the_run_and_json_event_sinks_show_a_hostile_line_made_safe(capsys):
    one_draw = HOSTILE.replace("\r", " ")    # a redrawn line prints its last state when plain
    RichEvents(plain=True).log("0", "out", one_draw)
    JsonEvents().log("1", "err", one_draw)
    out, err = capsys.readouterr()
    for text in (out, err):
        assert "]52;" in text and "\x1b]52" not in text and "\x1b[2J" not in text


def test_a_style_ends_with_its_line():
    """A line ending in "conceal" (ESC[8m), or black on black, hid every later line of `fleet logs`
    and the shell prompt after it: each line that styles text is reset at its end."""
    assert terminal_line("a\x1b[8mb").endswith("\x1b[0m")
    assert terminal_line("\x1b[30;40mhidden").endswith("hidden\x1b[0m")
    assert terminal_line("10%|##\r") == "10%|##\r"       # no style, nothing added
