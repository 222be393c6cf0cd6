#!/usr/bin/env python3
"""How -fr scales with the number of harvesters: 1 vs N remote harvesters, fetched in parallel.

Builds N harvester namespaces (each its own sshd and drive_manager.py export), then times
``drive_manager.py -fr`` on a local harvester whose farm lists 1 and then all N of them, same
run, same data. The issue's target: N=10 costs at most 1.5x N=1. Needs root; cleans up.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import yaml  # noqa: E402

from tests.support.harvester_env import harvester_config  # noqa: E402
from tests.support.netns_farm import NetnsFarm  # noqa: E402

PYTHON = sys.executable


def _namespace_cpu(farm: NetnsFarm, names: list[str]) -> float:
    """CPU seconds used so far by every sshd (and its children) of the harvester namespaces."""
    total = 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    for name in names:
        pid = farm.sshd_pid(name)
        if pid is None:
            continue
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # utime, stime, cutime, cstime (fields 14-17 of stat; index 11-14 after the name)
        total += sum(int(v) for v in fields[11:15]) / ticks
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--harvesters", type=int, default=10)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_farm_report: needs root (network namespaces)", file=sys.stderr)
        return 1
    names = [f"chianas{i:02d}" for i in range(1, args.harvesters + 1)]
    with tempfile.TemporaryDirectory(prefix="bench-fr-") as tmp:
        root = Path(tmp)
        with NetnsFarm(root, names) as farm:
            targets = []
            for name in names:
                hroot = root / name
                hroot.mkdir()
                config = harvester_config(hroot, [str(hroot / "none")], 108_877_420_953)
                config["hostname"] = name
                (hroot / "plot_manager.yaml").write_text(yaml.safe_dump(config))
                farm.exec_in(name, [PYTHON, str(REPO / "drive_manager.py"), "--config", str(hroot / "plot_manager.yaml")], check=True)
                targets.append({"name": name, "host": farm.host(name).address, "user": "root",
                                "export_file": str(hroot / "state" / "export" / "harvester.json")})
            local = root / "local"
            local.mkdir()
            results: dict[int, float] = {}
            cpus: dict[int, float] = {}
            harvester_cpu: dict[int, float] = {}
            for count in (1, args.harvesters):
                config = harvester_config(local, [str(local / "none")], 108_877_420_953)
                config["hostname"] = "local"
                config["farm"] = {"harvesters": targets[:count], "ssh": {
                    "key_file": str(farm.client_key), "known_hosts": str(farm.known_hosts), "connect_timeout_seconds": 5}}
                path = local / f"plot_manager-{count}.yaml"
                path.write_text(yaml.safe_dump(config))
                times, cpu = [], []
                for _ in range(args.runs):
                    started = time.perf_counter()
                    before = os.times()
                    proc = subprocess.run([PYTHON, str(REPO / "drive_manager.py"), "--config", str(path), "-fr", "--json"],
                                          capture_output=True, text=True, timeout=120)
                    times.append(time.perf_counter() - started)
                    after = os.times()
                    cpu.append(after.children_user + after.children_system - before.children_user - before.children_system)
                    if proc.returncode != 0 or f'"harvesters": {count + 1}' not in proc.stdout:
                        print(f"-fr with {count} harvesters failed: {proc.stderr}", file=sys.stderr)
                        return 1
                results[count] = statistics.median(times)
                cpus[count] = statistics.median(cpu)
                harvester_cpu[count] = _namespace_cpu(farm, names)
            one, many = results[1], results[args.harvesters]
            print(f"drive_manager.py -fr, median of {args.runs} runs, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs")
            print("| remote harvesters | wall s | x one | CPU s of drive_manager.py |")
            print("|---|--:|--:|--:|")
            print(f"| 1 | {one:.3f} | 1.00 | {cpus[1]:.2f} |")
            print(f"| {args.harvesters} | {many:.3f} | {many / one:.2f} | {cpus[args.harvesters]:.2f} |")
            spent = harvester_cpu[args.harvesters] - harvester_cpu[1]
            print(f"CPU used by the harvesters' sshd for the {args.harvesters}-harvester runs: {spent:.2f} s "
                  f"({spent / args.runs:.2f} s per report), on the same {os.cpu_count()} CPUs as the plotter side")
            print(f"target: {args.harvesters} harvesters <= 1.5x one: {'met' if many <= 1.5 * one else 'NOT met'}")
    return 0


if __name__ == "__main__":
    from benchlib import signals_raise_interrupt

    # SIGTERM/SIGHUP unwind like Ctrl-C, through NetnsFarm's exit: namespaces and sshds go too.
    try:
        with signals_raise_interrupt():
            status = main()
    except KeyboardInterrupt:
        print("bench_farm_report: interrupted; the harvester namespaces were removed", file=sys.stderr)
        status = 130
    sys.exit(status)
