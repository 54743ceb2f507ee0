"""Listings print what teammates wrote into a shared state (owners, projects, `fleet queue`'s
reasons, lease ids, run commands): a terminal must not obey escape sequences in them. A row whose
reason held `ESC ] 52 ; c ; … BEL` set the reader's clipboard, `ESC [ 2 J` cleared the screen,
`ESC ] 0 ; … BEL` retitled it. Cells print their control characters visibly (ESC as ^[), in the plain
and the rich form; --json and CSV keep the data as it is."""
from __future__ import annotations

from fleet.render.table import Column, Row, Table
from fleet.render.text import table_string, to_text

HOSTILE = "slots \x1b]52;c;ZWNobyBwd25lZA==\x07 \x1b[2J\x9b31m done"


def _table() -> Table:
    return Table([Column("who"), Column("why")], [Row(["eve\x1b]0;pwned\x07", HOSTILE])], title="queue \x1b[5m")


def test_plain_and_rich_listings_show_control_characters_instead_of_sending_them():
    for text in (to_text(_table()), table_string(_table())):
        assert not any(ord(c) < 32 and c != "\n" or 0x7f <= ord(c) < 0xa0 for c in text), repr(text)
        assert "^[]52;c;ZWNobyBwd25lZA==^G" in text and "eve^[]0;pwned^G" in text


def test_fleet_queue_prints_a_hostile_reason_visibly(fleet_home, capsys):
    from fleet.cli.queue import queue_command
    from fleet.providers.ssh.queue import WaitQueue
    from fleet.state import open_state
    state = open_state()
    try:
        WaitQueue(state.db).join(lease_id="L-x", owner="eve", project="p", gpus=1, machines=1, provider="ssh",
                                 reason=HOSTILE)
    finally:
        state.close()
    assert queue_command(json_out=False) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "^[]52;c;" in out
