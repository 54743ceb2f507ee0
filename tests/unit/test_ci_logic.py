"""CI context detection, secret masking and the GitHub summary/outputs format (pure logic)."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from fleet.ci import CI_CANCEL_GRACE_S, Masker, cancel_grace_s, detect_context, env_says_ci, secret_names
from fleet.ci_report import collect_metrics, github_outputs, gpu_hours, markdown, report_run

SHA = "a" * 40


def test_github_push_context():
    ctx = detect_context({"GITHUB_ACTIONS": "true", "GITHUB_SHA": SHA, "GITHUB_REF": "refs/heads/main",
                          "GITHUB_REF_NAME": "main", "GITHUB_REPOSITORY": "acme/vision", "GITHUB_RUN_ID": "77",
                          "GITHUB_RUN_ATTEMPT": "2", "GITHUB_SERVER_URL": "https://ghe.example.com/",
                          "GITHUB_EVENT_NAME": "push", "GITHUB_TOKEN": "ghs_secret"})
    assert ctx["provider"] == "github" and ctx["sha"] == SHA and ctx["branch"] == "main"
    assert ctx["run_url"] == "https://ghe.example.com/acme/vision/actions/runs/77/attempts/2"
    assert "pr" not in ctx and "ghs_secret" not in json.dumps(ctx)


def test_github_pull_request_number_from_ref_or_event_file(tmp_path):
    base = {"GITHUB_ACTIONS": "true", "GITHUB_SHA": SHA, "GITHUB_HEAD_REF": "feature/x"}
    assert detect_context({**base, "GITHUB_REF": "refs/pull/12/merge"})["pr"] == 12
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"action": "labeled", "pull_request": {"number": 31}}))
    ctx = detect_context({**base, "GITHUB_REF": "refs/heads/feature/x", "GITHUB_EVENT_NAME": "pull_request",
                          "GITHUB_EVENT_PATH": str(event)})
    assert ctx["pr"] == 31 and ctx["branch"] == "feature/x"
    event.write_text("not json")
    assert "pr" not in detect_context({**base, "GITHUB_EVENT_NAME": "pull_request", "GITHUB_EVENT_PATH": str(event)})


def test_gitlab_merge_request_context():
    ctx = detect_context({"CI": "true", "GITLAB_CI": "true", "CI_COMMIT_SHA": SHA, "CI_COMMIT_REF_NAME": "dev",
                          "CI_MERGE_REQUEST_IID": "5", "CI_MERGE_REQUEST_SOURCE_BRANCH_NAME": "dev",
                          "CI_JOB_URL": "https://gitlab.example.com/g/p/-/jobs/9", "CI_PROJECT_PATH": "g/p"})
    assert ctx == {"provider": "gitlab", "repository": "g/p", "sha": SHA, "ref": "dev", "branch": "dev", "pr": 5,
                   "run_url": "https://gitlab.example.com/g/p/-/jobs/9"}


def test_outside_ci_nothing_is_detected():
    assert detect_context({}) == {} and not env_says_ci({"CI": "false"})
    assert env_says_ci({"CI": "true"}) and detect_context({"CI": "true"}) == {"provider": "ci"}


def test_cancel_grace_is_short_in_ci_unless_fleet_grace_says_otherwise():
    assert cancel_grace_s({}) == CI_CANCEL_GRACE_S <= 3
    assert cancel_grace_s({"FLEET_GRACE": "20"}) is None   # fleet.run.execute.grace_s() applies the user's value


def test_masker_hides_whole_values_and_each_line_of_multiline_ones():
    cfg = SimpleNamespace(secrets=["API_KEY"])
    env = {"API_KEY": "abc123secret", "FLEET_SECRET_NAMES": "PEM, OTHER", "PEM": "-----BEGIN-----\nline2xyz\n",
           "OTHER": ""}
    assert secret_names(cfg, env) == ["API_KEY", "PEM", "OTHER"]
    mask = Masker.for_config(cfg, env)
    assert mask("key=abc123secret; pem line2xyz") == "key=***; pem ***"
    assert "::add-mask::abc123secret" in mask.github_commands()
    assert not Masker([]) and Masker([])("anything") == "anything"


def test_github_outputs_use_heredoc_for_multiline_values():
    text = github_outputs({"run-id": "r-1", "note": "two\nlines", "cost": None})
    assert text.startswith("run-id=r-1\nnote<<fleet_")
    delim = text.splitlines()[1].split("<<")[1]
    assert f"two\nlines\n{delim}\ncost=\n" in text


def _write_metrics(run_dir, rank, **values):
    d = run_dir / f"node-{rank}"
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps({"rank": rank, "world_size": 2, "loss_history": [1, 2], **values}))


def test_markdown_summary_has_status_cost_gpu_hours_and_metrics_table(tmp_path):
    _write_metrics(tmp_path, 1, accuracy=0.8, loss=0.5)
    _write_metrics(tmp_path, 0, accuracy=0.9, loss=0.3, note="x|y")
    rows = collect_metrics(tmp_path)
    assert [label for label, _ in rows] == ["0", "1"]
    summary = {"run_id": "r-1", "status": "failed", "exit_code": 3, "failing_rank": "1", "duration_s": 7200,
               "gpus": 4, "machines": 4, "template": "local-1gpu", "provider": "local", "simulated_gpus": True,
               "would_cost_usd": "8.048", "released": True,
               "ci": {"sha": SHA, "branch": "main", "pr": 4, "run_url": "https://x/runs/1"}}
    md = markdown(summary, rows)
    assert "failed (exit 3)" in md and "| First failing rank | 1 |" in md and "2h 00m 00s" in md
    assert "$8.0480" in md and "shadow price" in md and "| GPU-hours | 8.0000 |" in md
    assert "| rank | accuracy | loss |" in md and "| 0 | 0.9 | 0.3 |" in md and "| **mean** | 0.85 | 0.4 |" in md
    assert "PR #4" in md and "https://x/runs/1" in md
    assert gpu_hours({"gpus": 2, "duration_s": 1800}) == gpu_hours({"gpu_hours": "1.0000"})


def test_report_run_masks_and_writes_files(tmp_path):
    run_dir = tmp_path / "run"
    _write_metrics(run_dir, 0, accuracy=0.9)
    (run_dir / "logs").mkdir()
    (run_dir / "logs" / "0.log").write_text("token tok-123456 leaked\n")
    env = {"GITHUB_STEP_SUMMARY": str(tmp_path / "s.md"), "GITHUB_OUTPUT": str(tmp_path / "o.txt")}
    report_run({"run_id": "r-2", "status": "cancelled", "exit_code": 130, "message": "received tok-123456"},
               run_dir, Masker(["tok-123456"]), env)
    for path in (tmp_path / "s.md", tmp_path / "o.txt", run_dir / "logs" / "0.log", run_dir / "ci-summary.md"):
        assert "tok-123456" not in path.read_text(), path
    outputs = dict(line.split("=", 1) for line in (tmp_path / "o.txt").read_text().splitlines())
    assert outputs["exit-status"] == "130" and outputs["metrics-path"] == str(run_dir / "metrics.json")
    assert json.loads((run_dir / "metrics.json").read_text())["mean"] == {"accuracy": 0.9}


@pytest.mark.parametrize("bad", ["{not json", "[1, 2]"])
def test_unreadable_metrics_are_skipped(tmp_path, bad):
    (tmp_path / "node-0").mkdir()
    (tmp_path / "node-0" / "metrics.json").write_text(bad)
    assert collect_metrics(tmp_path) == []
    assert "No metrics.json" in markdown({"status": "succeeded", "exit_code": 0, "run_dir": "x"}, [])


def test_a_scrubbed_file_is_replaced_whole_and_a_link_put_at_its_name_meanwhile_is_not_followed(tmp_path):
    """The scrub read the file, then wrote the masked text to its name: a link put there in between
    was followed (a file outside the run rewritten), and a crash mid-write left the log cut short."""
    token = "tok-9f8e7d6c5b4a"
    log = tmp_path / "train.out"
    log.write_text(f"token: {token}\n")
    log.chmod(0o640)
    outside = tmp_path / "elsewhere.txt"
    outside.write_text("not the run's\n")

    class Swapping(Masker):
        def __call__(self, text):
            log.unlink()
            log.symlink_to(outside)             # between the read and the write
            return super().__call__(text)

    assert Swapping([token]).scrub_file(log) is True
    assert outside.read_text() == "not the run's\n"
    assert not log.is_symlink() and log.read_text() == "token: ***\n" and (log.stat().st_mode & 0o777) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere.txt", "train.out"]


def test_every_text_output_is_scrubbed_whatever_its_name_and_nothing_outside_the_run(tmp_path):
    """Only .log/.txt/.json/.jsonl/.md/.csv were scrubbed: Hydra's .hydra/config.yaml, train.out
    and files without a suffix went into the uploaded artifact with the token in them."""
    from fleet.ci_report import report_run
    token = "tok-9f8e7d6c5b4a"
    run = tmp_path / "run"
    (run / "node-0" / ".hydra").mkdir(parents=True)
    texts = [run / "node-0" / ".hydra" / "config.yaml", run / "node-0" / "train.out", run / "node-0" / "NOTES"]
    for path in texts:
        path.write_text(f"token: {token}\n")
    binary = run / "node-0" / "ckpt.bin"
    binary.write_bytes(b"\0weights" + token.encode())
    outside = tmp_path / "elsewhere.txt"
    outside.write_text(f"mine: {token}\n")
    (run / "node-0" / "link.txt").symlink_to(outside)        # an output's link: never followed
    report_run({"status": "succeeded", "exit_code": 0}, run, Masker([token]), environ={})
    assert [p.read_text() for p in texts] == ["token: ***\n"] * 3
    assert binary.read_bytes() == b"\0weights" + token.encode()   # binary: left as written
    assert outside.read_text() == f"mine: {token}\n"
