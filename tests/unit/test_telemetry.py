"""Telemetry: the agent's sampler (no-GPU fallback here for real, NVML through a fake) and the
controller reading the streamed file."""
from __future__ import annotations

import json
import subprocess
import sys
import threading

from fleet.remote.agent import telemetry as agent_tel
from fleet.telemetry import TelemetryFeed, TelemetryFile, summarise


class FakeNvml:
    def __init__(self, utils):
        self.utils = utils
        self.broken = False

    def count(self):
        return len(self.utils)

    def gpu(self, i):
        if self.broken:
            raise RuntimeError("GPU has fallen off the bus")
        return {"index": i, "name": "Fake H100", "util": self.utils[i], "mem_util": 10, "mem_used_mb": 100,
                "mem_total_mb": 80000, "power_w": 300.0}


def fake_proc(tmp_path, busy, idle):
    proc = tmp_path / "proc"
    proc.mkdir(exist_ok=True)
    (proc / "stat").write_text(f"cpu  {busy} 0 0 {idle} 0 0 0 0 0 0\ncpu0 1 2 3 4\n")
    (proc / "meminfo").write_text("MemTotal:       16384000 kB\nMemFree: 1 kB\nMemAvailable:    8192000 kB\n")
    return str(proc)


def test_without_a_gpu_it_says_why_once_and_reports_cpu_and_memory():
    """This machine has no NVIDIA driver: the real fallback, not a fake."""
    sampler = agent_tel.Sampler()
    record = sampler.sample()
    assert sampler.source == "proc" and record["gpus"] == []
    assert "NVML" in sampler.why
    assert record["mem_total_mb"] > 0 and "cpu_percent" in record
    out = subprocess.run([sys.executable, agent_tel.__file__, "-"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "NVML" in json.loads(out.stdout)["why"]


def test_stdlib_only_python_runs_it(tmp_path):
    """The agent's machines may have no packages: run with -I -S (no site-packages)."""
    out = tmp_path / "t.jsonl"
    proc = subprocess.run([sys.executable, "-I", "-S", agent_tel.__file__, str(out), "--interval", "0.05",
                           "--samples", "2"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert lines[0]["event"] == "start" and lines[0]["source"] == "proc" and "NVML" in lines[0]["why"]
    assert len(lines) == 3 and all("why" not in x for x in lines[1:])    # said once


def test_nvml_figures_cpu_percent_and_gpu_filter(tmp_path):
    proc = fake_proc(tmp_path, 100, 900)
    sampler = agent_tel.Sampler([1], proc=proc, nvml_factory=lambda: FakeNvml([10, 95]))
    fake_proc(tmp_path, 150, 950)                       # 50 busy of 100 jiffies
    record = sampler.sample()
    assert sampler.source == "nvml" and sampler.why is None
    assert [g["util"] for g in record["gpus"]] == [95] and record["gpus"][0]["power_w"] == 300.0
    assert record["cpu_percent"] == 50.0
    assert record["mem_total_mb"] == 16000 and record["mem_used_mb"] == 8000


def test_a_gpu_that_breaks_mid_run_falls_back_and_says_so(tmp_path):
    nvml = FakeNvml([50])
    sampler = agent_tel.Sampler(nvml_factory=lambda: nvml)
    path = tmp_path / "t.jsonl"
    stop = threading.Event()
    original = sampler.sample

    def breaking_sample():
        if sum(1 for _ in open(path)) >= 3:
            nvml.broken = True
        return original()

    sampler.sample = breaking_sample
    assert agent_tel.run(str(path), 0.01, stop=stop, max_samples=4, sampler=sampler) == 4
    records = [json.loads(x) for x in path.read_text().splitlines()]
    events = [r.get("event") for r in records]
    assert events.count("fallback") == 1 and "fallen off the bus" in records[events.index("fallback")]["why"]
    assert records[1]["source"] == "nvml" and records[-1]["source"] == "proc"


def test_loop_stops_when_asked(tmp_path):
    stop = threading.Event()
    path = tmp_path / "t.jsonl"
    thread = threading.Thread(target=agent_tel.loop, args=(str(path), 0.02, stop))
    thread.start()
    stop.set()
    thread.join(5)
    assert not thread.is_alive() and path.read_text().startswith('{"t"')


def test_controller_reads_only_complete_lines_and_skips_damage(tmp_path):
    path = tmp_path / "node-0.jsonl"
    path.write_text('{"t": 1, "event": "start", "source": "proc", "why": "NVML library not found"}\n'
                    '{"t": 2, "gpus": [{"util": 80}, {"util": 2}]}\nnot json\n{"t": 3, "gpus": [{"util": 6')
    tf = TelemetryFile(path)
    samples = tf.read_new()
    assert len(samples) == 1 and tf.bad_lines == 1 and tf.why == "NVML library not found"
    with open(path, "a") as f:
        f.write('0}, {"util": 4}]}\n')
    assert [s["t"] for s in tf.read_new()] == [3]
    assert tf.read_new() == []
    assert TelemetryFile(tmp_path / "missing.jsonl").read_new() == []


def test_summaries_give_mean_utilisation_and_idle_gpu_seconds(tmp_path):
    samples = [{"gpus": [{"util": 80}, {"util": 0}]}, {"gpus": [{"util": 90}, {"util": 10}]}]
    tick = summarise(samples, seconds=10, idle_percent=5)
    assert tick.gpu_util_permille == 450            # mean of 80, 0, 90, 10
    assert tick.idle_gpu_s == 5                     # GPU 1 idle in half the samples of a 10 s tick
    assert summarise([{"gpus": []}], 10).gpu_util_permille is None
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text('{"gpus": [{"util": 1}, {"util": 2}]}\n')
    b.write_text('{"t": 1, "event": "start", "why": "no NVML"}\n{"gpus": []}\n')
    feed = TelemetryFeed({"m0": a, "m1": b})
    ticks = feed.tick(10)
    assert ticks["m0"].idle_gpu_s == 20 and ticks["m1"].gpu_util_permille is None
    assert feed.latest_utilisations() == [1.0, 2.0, None] and feed.reasons() == {"m1": "no NVML"}
