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


def test_image_bake_progress_prints_recipe_text_literally(monkeypatch, capsys):
    """`fleet image bake` prints recipe step names and verification commands as they are written."""
    from types import SimpleNamespace

    import fleet.images.bake as bake_module
    import fleet.images.recipe as recipe_module
    import fleet.images.where as where_module
    from fleet.cli.image import bake_cmd

    def fake_bake(_ec2, _recipe, _options, progress):
        progress("verified pip: python -c 'import x[y]; print([red]ok[/])' [[hosts]]")
        return SimpleNamespace(reused=True, mode="check", image_name="fleet-base-cpu-abc", image_id="ami-1")

    monkeypatch.setattr(bake_module, "bake", fake_bake)
    monkeypatch.setattr(recipe_module, "load_recipe", lambda name: name)
    monkeypatch.setattr(where_module, "stack_outputs", lambda path: {})
    monkeypatch.setattr(where_module, "bake_options", lambda out, **kw: None)
    monkeypatch.setattr(where_module, "ec2_client", lambda region, out: None)
    bake_cmd("base-cpu", region=None, outputs=None, ssh_cidr=None, check=False, json_out=False)
    assert "fleet: bake: verified pip: python -c 'import x[y]; print([red]ok[/])' [[hosts]]" in capsys.readouterr().err
