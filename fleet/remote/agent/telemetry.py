#!/usr/bin/env python3
"""GPU and host telemetry on a leased machine. Standard library only: copied next to agent.py.

`sample()` returns one dict: per-GPU utilisation, memory and power from NVML (pynvml when it is
importable, otherwise libnvidia-ml through ctypes), plus CPU and memory figures from /proc. Without
a GPU or driver it says once why (`Sampler.why`, e.g. "NVML library not found") and carries on with
the CPU and memory figures: telemetry never fails a run.

`run()` appends one JSON line per sample to a file every few seconds; the controller streams the
file home with the logs (fleet/telemetry.py reads it). The first line is a header naming the source
and, without NVML, the reason.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys
import threading
import time

NVML_SUCCESS = 0


class _Utilization(ctypes.Structure):
    _fields_ = [("gpu", ctypes.c_uint), ("memory", ctypes.c_uint)]


class _Memory(ctypes.Structure):
    _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]


class NvmlUnavailable(Exception):
    pass


class _CtypesNvml:
    """The few NVML calls we need, straight from libnvidia-ml (no Python package on the machine)."""

    def __init__(self):
        lib = None
        for name in ("libnvidia-ml.so.1", "libnvidia-ml.so"):
            try:
                lib = ctypes.CDLL(name)
                break
            except OSError:
                continue
        if lib is None:
            raise NvmlUnavailable("NVML library not found (libnvidia-ml.so.1): no NVIDIA driver on this machine")
        self.lib = lib
        lib.nvmlErrorString.restype = ctypes.c_char_p
        self._call("nvmlInit_v2")

    def _call(self, name, *args):
        rc = getattr(self.lib, name)(*args)
        if rc != NVML_SUCCESS:
            text = self.lib.nvmlErrorString(rc)
            raise NvmlUnavailable(f"{name} failed: {text.decode() if text else rc}")

    def count(self) -> int:
        n = ctypes.c_uint()
        self._call("nvmlDeviceGetCount_v2", ctypes.byref(n))
        return n.value

    def gpu(self, index: int) -> dict:
        handle = ctypes.c_void_p()
        self._call("nvmlDeviceGetHandleByIndex_v2", ctypes.c_uint(index), ctypes.byref(handle))
        util, mem, power = _Utilization(), _Memory(), ctypes.c_uint()
        name = ctypes.create_string_buffer(96)
        self._call("nvmlDeviceGetUtilizationRates", handle, ctypes.byref(util))
        self._call("nvmlDeviceGetMemoryInfo", handle, ctypes.byref(mem))
        self._call("nvmlDeviceGetName", handle, name, ctypes.c_uint(len(name)))
        power_w = None
        if self.lib.nvmlDeviceGetPowerUsage(handle, ctypes.byref(power)) == NVML_SUCCESS:
            power_w = round(power.value / 1000.0, 1)
        return {"index": index, "name": name.value.decode(errors="replace"), "util": util.gpu,
                "mem_util": util.memory, "mem_used_mb": mem.used // 2**20, "mem_total_mb": mem.total // 2**20,
                "power_w": power_w}


class _PynvmlNvml:
    """nvidia-ml-py, when the machine's Python has it."""

    def __init__(self, pynvml):
        self.nv = pynvml
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            raise NvmlUnavailable(f"NVML unavailable: {exc}") from None

    def count(self) -> int:
        return self.nv.nvmlDeviceGetCount()

    def gpu(self, index: int) -> dict:
        nv = self.nv
        handle = nv.nvmlDeviceGetHandleByIndex(index)
        util = nv.nvmlDeviceGetUtilizationRates(handle)
        mem = nv.nvmlDeviceGetMemoryInfo(handle)
        name = nv.nvmlDeviceGetName(handle)
        try:
            power_w = round(nv.nvmlDeviceGetPowerUsage(handle) / 1000.0, 1)
        except nv.NVMLError:
            power_w = None
        return {"index": index, "name": name.decode() if isinstance(name, bytes) else str(name),
                "util": int(util.gpu), "mem_util": int(util.memory), "mem_used_mb": int(mem.used) // 2**20,
                "mem_total_mb": int(mem.total) // 2**20, "power_w": power_w}


def _open_nvml():
    try:
        import pynvml  # noqa: PLC0415 - optional on machines
    except ImportError:
        return _CtypesNvml()
    try:
        return _PynvmlNvml(pynvml)
    except NvmlUnavailable:
        return _CtypesNvml()   # same library, but its own error text is clearer


def _read_cpu_times(proc: str) -> tuple[int, int] | None:
    try:
        with open(os.path.join(proc, "stat")) as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields), idle


def _read_meminfo(proc: str) -> dict:
    values = {}
    try:
        with open(os.path.join(proc, "meminfo")) as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("MemTotal", "MemAvailable"):
                    values[key] = int(rest.split()[0]) // 1024
    except (OSError, ValueError, IndexError):
        return {}
    if "MemTotal" not in values:
        return {}
    total = values["MemTotal"]
    return {"mem_total_mb": total, "mem_used_mb": total - values.get("MemAvailable", total)}


class Sampler:
    """Keeps what a sample needs between calls: the NVML handle and the previous CPU counters."""

    def __init__(self, gpu_indices=None, proc: str = "/proc", nvml_factory=_open_nvml):
        self.proc = proc
        self.gpu_indices = list(gpu_indices) if gpu_indices is not None else None
        self.why = None
        self.nvml = None
        try:
            self.nvml = nvml_factory()
        except NvmlUnavailable as exc:
            self.why = str(exc)
        except Exception as exc:   # a broken driver must not stop the run
            self.why = f"NVML unusable: {type(exc).__name__}: {exc}"
        self._cpu = _read_cpu_times(proc)

    @property
    def source(self) -> str:
        return "nvml" if self.nvml is not None else "proc"

    def _gpus(self) -> list:
        if self.nvml is None:
            return []
        try:
            indices = self.gpu_indices if self.gpu_indices is not None else range(self.nvml.count())
            return [self.nvml.gpu(i) for i in indices]
        except Exception as exc:   # GPU fell off the bus, driver reloaded: say why once, go on without
            self.why = f"NVML stopped answering: {type(exc).__name__}: {exc}"
            self.nvml = None
            return []

    def sample(self) -> dict:
        out = {"t": round(time.time(), 3), "source": self.source, "gpus": self._gpus()}
        now = _read_cpu_times(self.proc)
        if now and self._cpu and now[0] > self._cpu[0]:
            busy = (now[0] - self._cpu[0]) - (now[1] - self._cpu[1])
            out["cpu_percent"] = round(100.0 * busy / (now[0] - self._cpu[0]), 1)
        else:
            out["cpu_percent"] = None
        self._cpu = now or self._cpu
        out.update(_read_meminfo(self.proc))
        try:
            out["load1"] = round(os.getloadavg()[0], 2)
        except OSError:
            pass
        return out


_DEFAULT = None


def sample() -> dict:
    """One telemetry sample from a process-wide sampler (why NVML is missing, if it is, under "why")."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = Sampler(_gpu_indices_from_env())
    result = _DEFAULT.sample()
    if _DEFAULT.why:
        result["why"] = _DEFAULT.why
    return result


def _gpu_indices_from_env():
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    if not visible:
        return None
    try:
        return [int(x) for x in visible.split(",") if x.strip()]
    except ValueError:
        return None   # UUIDs: sample every GPU rather than guess


def _alive(pid) -> bool:
    if pid is None:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run(path: str, interval: float = 5.0, *, stop: threading.Event | None = None, gpu_indices=None,
        watch_pid: int | None = None, max_samples: int | None = None, sampler: Sampler | None = None) -> int:
    """Append a header line, then one sample per `interval` seconds until `stop` is set, `watch_pid`
    exits or `max_samples` were written. Returns the number of samples written."""
    stop = stop or threading.Event()
    sampler = sampler or Sampler(gpu_indices if gpu_indices is not None else _gpu_indices_from_env())
    written = 0
    # Never through a link: root's watchdog samples into the login's state directory (AWS).
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o666)
    with os.fdopen(fd, "a", buffering=1) as out:
        header = {"t": round(time.time(), 3), "event": "start", "source": sampler.source,
                  "interval_s": interval, "host": os.uname().nodename}
        if sampler.why:
            header["why"] = sampler.why
        out.write(json.dumps(header) + "\n")
        reported = sampler.why
        while not stop.is_set() and _alive(watch_pid):
            record = sampler.sample()
            if sampler.why and sampler.why != reported:   # NVML went away mid-run: say so once
                out.write(json.dumps({"t": record["t"], "event": "fallback", "why": sampler.why}) + "\n")
                reported = sampler.why
            out.write(json.dumps(record) + "\n")
            written += 1
            if max_samples is not None and written >= max_samples:
                break
            stop.wait(interval)
    return written


def loop(path: str, interval: float, stop: threading.Event) -> int:
    """What agent.py's watchdog runs in a thread: sample into `path` until `stop` is set."""
    try:
        return run(path, interval, stop=stop)
    except OSError:
        return 0   # an unwritable run directory must not take the watchdog down with it


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="fleet telemetry sampler (JSON lines)")
    parser.add_argument("out", help="file to append JSON lines to ('-' prints one sample and exits)")
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--gpus", default=None, help="comma-separated GPU indices (default: all / CUDA_VISIBLE_DEVICES)")
    parser.add_argument("--pid", type=int, default=None, help="stop when this process exits")
    parser.add_argument("--samples", type=int, default=None, help="stop after this many samples")
    args = parser.parse_args(argv)
    if args.out == "-":
        print(json.dumps(sample()))
        return 0
    gpus = [int(x) for x in args.gpus.split(",")] if args.gpus else None
    stop = threading.Event()
    try:
        import signal
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    except (ValueError, OSError):
        pass
    try:
        run(args.out, args.interval, stop=stop, gpu_indices=gpus, watch_pid=args.pid, max_samples=args.samples)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
