#!/usr/bin/env python3
"""Benchmark: a harvester as a plot sink, several plots at once, each onto its own slow drive.

Issue 12's proof: "With 1, 2, 4 and 8 drives at 40 MB/s each and the link capped with tc at
160 MB/s, print the aggregate MB/s of one cron pass against the physical limit measured in the
same run (N raw nc streams, one per drive, and sync), and against the peers' way (N rsync
processes over SSH, one per drive, as plow does). Target: aggregate at least 0.9 x min(link,
N x drive speed), ahead of parallel rsync, with flat memory per receiver." And: "seconds per
plot for 20 plots of 64-100 MB at one transfer at a time, against raw nc file after file and
one rsync of the directory; target at most 0.03 s of fixed cost per plot over the data time,
ahead of both peers."

What it builds (root only; everything is undone again, also on failure and Ctrl-C):

* A NetnsFarm with one harvester, ``chianas01`` (its own sshd on 10.213.77.11, holding the
  farm lock /run/lock/plot-manager-netns.lock while it runs).
* ``max(--drives)`` throttled drives (bench/throttled_drives.py: nbdkit's memory plugin with
  its rate filter at ``--drive-mbps``, exposed by nbdfuse, loop-mounted ext4), each sized for
  exactly ``--plots-per-drive`` plots, mounted inside the farm root so the namespace sees them,
  and written full once before anything is timed.
* The link: ``tc tbf`` on the bridge side of the harvester's veth at ``--link-mbps``.
* Source plots: fake plots with a valid header and chia name (random data after the header),
  fsynced once and then warm in the page cache; tools read the same files.

Part 1 (drives), for each N: round-robin over the tools, ``--rounds`` times, N x k plots
(k = ``--plots-per-drive``): N raw ``nc`` streams (one per drive, that drive's plots back to
back into one file) and ``syncfs``; N ``rsync -e ssh`` processes (one per drive) and
``syncfs``; one ``plot_manager.py`` cron pass on the plotter with ``max_concurrent_transfers``
N, to a harvester whose ``drive_manager.py`` pass (config: ``concurrent_receive_drives`` N,
these N drives only) wrote receive_plot.sh. Aggregate MB/s = bytes landed / wall time until
on disk. Peak RSS (VmHWM) of every receiver process and the drives written at once are
sampled from /proc.

Part 2 (small plots): a tmpfs drive, the link uncapped, one transfer at a time: 20 plots of
``--small-k`` (k22: 74 MB) and one big plot (``--big-k``, k26: 1.39 GB) that gives each
tool's own big-file speed. Seconds per plot, data time per plot at that speed, and the fixed
cost per plot = seconds per plot - data time; and the same for a batch of as many tiny plots
(``--tiny-k``, k18: 3.8 MB), whose time is nearly all fixed cost. For ours also from its own
transfer records (PLOT line to OK), i.e. without the run's one-off start (Python, config,
export, SSH connect).

Usage:  sudo .venv/bin/python bench/bench_sink.py --setup     # apt-get install nbdkit libnbd-bin fuse3
        sudo .venv/bin/python bench/bench_sink.py [--drives 1,2,4,8] [--plots-per-drive 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench_transfer import cpu_model, mem_available
from benchlib import (
    GIB,
    MIB,
    REPO,
    CheckFailed,
    Scratch,
    SourcePlot,
    make_source_plot,
    print_markdown_table,
    require_root_and_tools,
    run_in_scratch,
)
from sink_rig import (
    HARVESTER,
    Harvester,
    Rig,
    Sample,
    clear_dir,
    product_has_setting,
    product_revision,
    syncfs_all,
    write_configs,
)
from sink_watch import mib, peak_summary
from throttled_drives import PACKAGES, ThrottledDrives, missing_tools

DRIVE_TOOLS = ("cp", "nc", "rsync", "ours")
SMALL_TOOLS = ("nc", "rsync", "ours")
TMPFS_SOURCE = "benchsink"
#: What runs in the benchmark's "ours" rows (for naming the commit measured).
PRODUCT_PATHS = ("utilities", "templates", "plot_manager.py", "drive_manager.py", "receive_plot.py")
APT = ["apt-get", "install", "-y", *sorted(set(PACKAGES.values()) - {"mount", "e2fsprogs"})]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench_sink.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--setup", action="store_true", help=f"install what it needs ({' '.join(APT)}) and exit")
    p.add_argument("--drives", default="1,2,4,8", help="drive counts N to measure (comma-separated)")
    p.add_argument("--plots-per-drive", type=int, default=2, help="k: plots per drive and run (N x k plots)")
    p.add_argument("--plot-k", type=int, default=24, help="k of the drive part's plots (24: 321 MB)")
    p.add_argument("--drive-mbps", type=float, default=40.0, help="write limit of each drive, MB/s (10^6 bytes)")
    p.add_argument("--link-mbps", type=float, default=160.0, help="tc cap of the plotter -> harvester link, MB/s")
    p.add_argument("--rounds", type=int, default=3, help="timed runs per tool and N (median shown)")
    p.add_argument("--small-rounds", type=int, default=5,
                   help="timed runs per tool in the small-plot part (about 40 s each here; median shown)")
    p.add_argument("--small-plots", type=int, default=20, help="plots in the small-plot part")
    p.add_argument("--small-k", type=int, default=22, help="k of the small plots (22: 74 MB)")
    p.add_argument("--big-k", type=int, default=26, help="k of the big file giving each tool's own speed")
    p.add_argument("--tiny-k", type=int, default=18,
                   help="k of a batch of tiny plots (18: 3.8 MB) whose time per plot is nearly all fixed cost")
    p.add_argument("--parts", default="drives,small", help="drives, small or both (comma-separated)")
    p.add_argument("--tools", default="cp,nc,rsync,ours",
                   help="subset of cp,nc,rsync,ours (cp: the drives alone, no link; drive part only)")
    p.add_argument("--work-dir", default="/var/tmp", help="where the source plots live (a real filesystem)")
    p.add_argument("--product-commit", metavar="REV",
                   help="run the product (plot_manager.py, drive_manager.py, receive_plot.py) as committed at REV "
                        "(git archive into the work directory), not this working tree with its uncommitted edits")
    args = p.parse_args(argv)
    try:
        args.drive_counts = sorted({int(x) for x in args.drives.split(",") if x.strip()})
    except ValueError:
        p.error(f"--drives: not a list of numbers: {args.drives!r}")
    if not args.drive_counts or min(args.drive_counts) < 1 or max(args.drive_counts) > 16:
        p.error("--drives: counts from 1 to 16")
    args.parts = [x for x in ("drives", "small") if x in args.parts.split(",")]
    if not args.parts:
        p.error("--parts: drives, small or drives,small")
    args.tools = [t for t in DRIVE_TOOLS if t in args.tools.split(",")]
    if not args.tools:
        p.error("--tools: some of cp,nc,rsync,ours")
    args.small_tools = [t for t in SMALL_TOOLS if t in args.tools]
    if "small" in args.parts and not args.small_tools:
        p.error("--tools: the small-plot part needs some of nc,rsync,ours")
    for name in ("plots_per_drive", "rounds", "small_rounds", "small_plots"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    args.product_tree = REPO
    if args.product_commit:
        proc = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--verify", "--short", f"{args.product_commit}^{{commit}}"],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            p.error(f"--product-commit: not a commit here: {args.product_commit!r}")
        args.product_commit = proc.stdout.strip()
    return args


def extract_product(commit: str, dest: Path) -> Path:
    """``git archive COMMIT`` unpacked at ``dest``: the product exactly as committed."""
    dest.mkdir()
    archive = subprocess.Popen(["git", "-C", str(REPO), "archive", commit], stdout=subprocess.PIPE)
    tar = subprocess.run(["tar", "-x", "-C", str(dest)], stdin=archive.stdout, capture_output=True, check=False)
    if archive.wait() != 0 or tar.returncode != 0:
        raise CheckFailed(f"git archive {commit} | tar -x failed: {tar.stderr.decode(errors='replace').strip()}")
    return dest


# --------------------------------------------------------------------------------------------
# Part 1: N throttled drives behind a capped link
# --------------------------------------------------------------------------------------------


@dataclass
class DrivePart:
    args: argparse.Namespace
    rig: Rig
    drives: ThrottledDrives
    sources: list[SourcePlot]
    harvester: Harvester
    sink_setting: bool  # the product knows concurrent_receive_drives

    def mountpoints(self, n: int) -> list[Path]:
        return [d.mountpoint for d in self.drives.drives[:n]]

    def plots_of_drive(self, n: int) -> list[list[SourcePlot]]:
        k = self.args.plots_per_drive
        return [self.sources[i * k:(i + 1) * k] for i in range(n)]

    def clear(self, n: int) -> None:
        for mountpoint in self.mountpoints(n):
            clear_dir(mountpoint)
        syncfs_all(self.mountpoints(n))

    def run(self, tool: str, n: int) -> Sample:
        dests = self.mountpoints(n)
        named = {d.name: d.mountpoint for d in self.drives.drives}
        self.clear(n)
        try:
            if tool == "cp":
                return self.rig.run_local_copies([[p.path for p in ps] for ps in self.plots_of_drive(n)], dests,
                                                 named)
            if tool == "nc":
                return self.rig.run_nc_streams([[p.path for p in ps] for ps in self.plots_of_drive(n)], dests, named)
            if tool == "rsync":
                return self.rig.run_rsyncs([[p.path for p in ps] for ps in self.plots_of_drive(n)], dests, named)
            write_configs(self.harvester, address=self.rig.address, farm=self.rig.farm, mountpoints=dests,
                          devices=[d.device for d in self.drives.drives[:n]], plot_size=self.sources[0].size,
                          receive_drives=n if self.sink_setting else None, max_concurrent=n)
            plots = [p for ps in self.plots_of_drive(n) for p in ps]
            return self.rig.run_ours(self.harvester, plots, dests, named)
        finally:
            self.rig.kill_children()
            self.clear(n)


def drive_size_for(plots: int, plot_size: int) -> int:
    """A drive with room for exactly ``plots`` plots once ext4 took its share (checked after mkfs)."""
    raw = (plots + 0.5) * plot_size * 1.02 + 48 * MIB
    return (int(raw) // MIB + 1) * MIB


def check_slots(drives: ThrottledDrives, plots: int, plot_size: int) -> None:
    for drive in drives.drives:
        st = os.statvfs(drive.mountpoint)
        free = st.f_bavail * st.f_frsize
        if free // plot_size != plots:
            raise CheckFailed(f"{drive.name}: {free} bytes free = {free // plot_size} plot slots, want {plots}: "
                              "adjust drive_size_for()")


def drive_part(args: argparse.Namespace, scratch: Scratch, rig: Rig, farm_root: Path) -> dict[tuple[int, str], list[Sample]]:
    from utilities.plots import expected_plot_size

    n_max = max(args.drive_counts)
    k = args.plots_per_drive
    plot_size = expected_plot_size(args.plot_k)
    size = drive_size_for(k, plot_size)
    need = n_max * k * plot_size + n_max * size
    if mem_available() < need + 3 * GIB:
        raise CheckFailed(f"MemAvailable {mem_available() / GIB:.1f} GiB < {need / GIB:.1f} GiB (warm sources + "
                          f"{n_max} RAM drives of {size / GIB:.2f} GiB) + 3 GiB: fewer --drives or --plots-per-drive")
    src_dir = scratch.work / "src-drives"
    src_dir.mkdir()
    t0 = time.perf_counter()
    sources = [make_source_plot(src_dir, args.plot_k) for _ in range(n_max * k)]
    print(f"sources: {len(sources)} k{args.plot_k} plots of {plot_size / 1e6:.1f} MB in {time.perf_counter() - t0:.1f} s",
          flush=True)

    t0 = time.perf_counter()
    drives = scratch.stack.enter_context(ThrottledDrives(
        farm_root / HARVESTER / "mnt", scratch.work / "fuse", [f"drive{i}" for i in range(n_max)], size,
        args.drive_mbps * 1e6))
    check_slots(drives, k, plot_size)
    drives.prefill()
    print(f"drives: {n_max} x {size / MIB:.0f} MiB ext4, {args.drive_mbps:g} MB/s each (nbdkit rate "
          f"{int(args.drive_mbps * 8e6)} bit/s, burstiness {drives.burstiness}), {k} plot slots each; "
          f"made and written full once in {time.perf_counter() - t0:.1f} s; nbdkit RSS "
          f"{drives.memory_kib() / 1024 / 1024:.1f} GiB", flush=True)
    print(f"link: {rig.cap_link(args.link_mbps)} on {rig.veth}; measured "
          f"{rig.link_mb_per_s(sources[0]):.0f} MB/s (one nc stream of one plot to /dev/null)", flush=True)
    print(f"one drive alone, one plot: dd conv=fsync {dd_mb_per_s(sources[0], drives):.1f} MB/s, "
          f"nc + syncfs {single_drive_mb_per_s(rig, sources[0], drives):.1f} MB/s (the drive idles while the plot "
          "streams into the page cache)", flush=True)

    sink = product_has_setting(args.product_tree, "harvester", "concurrent_receive_drives")
    if not sink:
        print("NOTE: this product has no harvester.concurrent_receive_drives: its receivers take one drive each "
              "(the receive drive); the config omits the key", flush=True)
    part = DrivePart(args, rig, drives, sources, Harvester(farm_root / "harvester-drives",
                                                          scratch.work / "plotter-drives"), sink)
    results: dict[tuple[int, str], list[Sample]] = {}
    for n in args.drive_counts:
        for r in range(args.rounds):
            t0 = time.perf_counter()
            order = args.tools[r % len(args.tools):] + args.tools[:r % len(args.tools)]
            for tool in order:
                results.setdefault((n, tool), []).append(part.run(tool, n))
            print(f"N={n} round {r + 1}/{args.rounds}: {time.perf_counter() - t0:.0f} s "
                  + ", ".join(f"{t} {mb(results[(n, t)][-1]):.0f} MB/s" for t in args.tools)
                  + f"; load {os.getloadavg()[0]:.2f}", flush=True)
    drives.close()  # its RAM back before the small-plot part (closing again at the end is a no-op)
    for source in sources:
        source.path.unlink()
    return results


def dd_mb_per_s(source: SourcePlot, drives: ThrottledDrives) -> float:
    """The drive's own write speed: dd of one plot onto it, timed until fsync returned."""
    drive = drives.drives[0]
    t0 = time.perf_counter()
    subprocess.run(["dd", f"if={source.path}", f"of={drive.mountpoint / 'dd.bin'}", "bs=4M", "conv=fsync"],
                   capture_output=True, check=True)
    seconds = time.perf_counter() - t0
    clear_dir(drive.mountpoint)
    syncfs_all([drive.mountpoint])
    return source.size / seconds / 1e6


def single_drive_mb_per_s(rig: Rig, source: SourcePlot, drives: ThrottledDrives) -> float:
    drive = drives.drives[0]
    sample = rig.run_nc_streams([[source.path]], [drive.mountpoint], {drive.name: drive.mountpoint})
    rig.kill_children()
    clear_dir(drive.mountpoint)
    syncfs_all([drive.mountpoint])
    return mb(sample)


def mb(sample: Sample) -> float:
    return sample.landed / sample.seconds / 1e6


def median_mb(samples: list[Sample]) -> float:
    return statistics.median(mb(s) for s in samples)


def print_drive_table(args: argparse.Namespace, results: dict[tuple[int, str], list[Sample]]) -> None:
    labels = {"cp": "N cp + syncfs, local (drives alone, no link)",
              "nc": "N nc streams + syncfs (physical limit)", "rsync": "N rsync -e ssh + syncfs (plow's way)",
              "ours": "ours: one plot_manager.py cron pass"}
    header = ("N", "limit MB/s", "tool", "runs", "MB/s median", "min..max", "x limit", "x cp", "x nc", "x rsync",
              "to exit MB/s", "drives at once", "writers/drive", "receiver peak MiB")
    rows = []
    for n in args.drive_counts:
        limit = min(args.link_mbps, n * args.drive_mbps)
        cp = median_mb(results[(n, "cp")]) if (n, "cp") in results else None
        nc = median_mb(results[(n, "nc")]) if (n, "nc") in results else None
        rsync = median_mb(results[(n, "rsync")]) if (n, "rsync") in results else None
        for tool in args.tools:
            samples = results[(n, tool)]
            speeds = [mb(s) for s in samples]
            med = statistics.median(speeds)
            exits = [s.landed / s.extra["to_exit"] / 1e6 for s in samples if "to_exit" in s.extra]
            label = {"cp": "cp", "nc": "nc", "rsync": "rsync", "ours": "receive_plot.py"}[tool]
            peaks = sorted((kib for s in samples if s.watch for kib in s.watch.peaks_of(label)), reverse=True)
            notes = sorted({s.note for s in samples if s.note})
            rows.append((
                str(n), f"{limit:.0f}", labels[tool] + (f" [{'; '.join(notes)}]" if notes else ""), str(len(speeds)),
                f"{med:.1f}", f"{min(speeds):.0f}..{max(speeds):.0f}", f"{med / limit:.2f}",
                f"{med / cp:.2f}" if cp else "-", f"{med / nc:.2f}" if nc else "-", f"{med / rsync:.2f}" if rsync else "-",
                f"{statistics.median(exits):.0f}" if exits else "",
                "-" if tool == "cp" else str(max(s.watch.max_drives_at_once for s in samples if s.watch)),
                "-" if tool == "cp" else str(max(s.watch.max_writers_per_drive for s in samples if s.watch)),
                peak_summary(peaks) if peaks else "-",
            ))
    print_markdown_table(header, rows, ["<", ">", "<", *[">"] * 11])
    print("\nevery run, MB/s (in the order run):")
    for (n, tool), samples in sorted(results.items()):
        print(f"  N={n} {tool:6} " + " ".join(f"{mb(s):6.1f}" for s in samples))
    ours = [(n, sorted((kib for s in results[(n, "ours")] if s.watch for kib in s.watch.peaks_of("receive_plot.py")),
                       reverse=True)) for n in args.drive_counts if (n, "ours") in results]
    if ours:
        print("\nmemory per receiver (receive_plot.py VmHWM, MiB, biggest / median over every receiver of every "
              "round): " + "; ".join(f"N={n}: {mib(p[0]):.1f} / {mib(int(statistics.median(p))):.1f} (x{len(p)})"
                                     for n, p in ours if p))


# --------------------------------------------------------------------------------------------
# Part 2: many small plots, one at a time
# --------------------------------------------------------------------------------------------


def small_part(args: argparse.Namespace, scratch: Scratch, rig: Rig, farm_root: Path) -> dict[tuple[str, str], list[Sample]]:
    from tests.support.tmpfs_drives import TmpfsDrives
    from utilities.plots import expected_plot_size

    small_size = expected_plot_size(args.small_k)
    big_size = expected_plot_size(args.big_k)
    batch = args.small_plots * small_size
    tmpfs_size = max(batch, big_size) + max(batch, big_size) // 4 + 64 * MIB
    need = batch + big_size + tmpfs_size
    if mem_available() < need + 3 * GIB:
        raise CheckFailed(f"MemAvailable {mem_available() / GIB:.1f} GiB < {need / GIB:.1f} GiB + 3 GiB for the "
                          "small-plot part")
    src_dir = scratch.work / "src-small"
    src_dir.mkdir()
    t0 = time.perf_counter()
    small = [make_source_plot(src_dir, args.small_k) for _ in range(args.small_plots)]
    tiny = [make_source_plot(src_dir, args.tiny_k) for _ in range(args.small_plots)]
    big = make_source_plot(src_dir, args.big_k)
    print(f"\nsmall-plot part: {len(small)} k{args.small_k} plots of {small_size / 1e6:.1f} MB "
          f"({batch / 1e6:.0f} MB), as many k{args.tiny_k} of {tiny[0].size / 1e6:.1f} MB and one k{args.big_k} of "
          f"{big_size / 1e6:.0f} MB, made in "
          f"{time.perf_counter() - t0:.1f} s", flush=True)
    tmpfs = scratch.stack.enter_context(TmpfsDrives(farm_root / HARVESTER / "small", ["drive0"],
                                                    size=str(tmpfs_size), source=TMPFS_SOURCE))
    dest = tmpfs.drives[0].mountpoint
    rig.uncap_link()
    harvester = Harvester(farm_root / "harvester-small", scratch.work / "plotter-small")
    sink = product_has_setting(args.product_tree, "harvester", "concurrent_receive_drives")
    write_configs(harvester, address=rig.address, farm=rig.farm, mountpoints=[dest], devices=[TMPFS_SOURCE],
                  plot_size=small_size, receive_drives=1 if sink else None, max_concurrent=1)
    drives = {"tmpfs": dest}
    print(f"destination: tmpfs {dest} ({tmpfs_size / GIB:.2f} GiB), link uncapped "
          f"(measured {rig.link_mb_per_s(big):.0f} MB/s, one nc stream)", flush=True)

    def run(tool: str, what: str) -> Sample:
        clear_dir(dest)
        files = {"small": small, "tiny": tiny, "big": [big]}[what]
        try:
            if tool == "nc":
                return rig.run_nc_files([p.path for p in files], dest)
            if tool == "rsync":
                return rig.run_rsyncs([[p.path for p in files]], [dest], drives)
            return rig.run_ours(harvester, files, [dest], drives)
        finally:
            rig.kill_children()
            clear_dir(dest)

    results: dict[tuple[str, str], list[Sample]] = {}
    tools = args.small_tools
    for r in range(args.small_rounds):
        t0 = time.perf_counter()
        order = tools[r % len(tools):] + tools[:r % len(tools)]
        for tool in order:
            for what in ("small", "tiny", "big"):
                results.setdefault((tool, what), []).append(run(tool, what))
        print(f"small plots round {r + 1}/{args.small_rounds}: {time.perf_counter() - t0:.0f} s; "
              f"load {os.getloadavg()[0]:.2f}", flush=True)
    return results


def print_small_table(args: argparse.Namespace, results: dict[tuple[str, str], list[Sample]]) -> None:
    """Per tool: seconds per plot, data time per plot at its own big-file speed, the rest (fixed cost).

    For ours a second row takes both from the plotter's transfer records (PLOT line to OK), i.e.
    without the run's one-off start, which a cron run pays once however many plots it sends.
    """
    from utilities.plots import expected_plot_size

    n = args.small_plots
    size = {"small": expected_plot_size(args.small_k), "tiny": expected_plot_size(args.tiny_k),
            "big": expected_plot_size(args.big_k)}
    header = ("tool", "runs", f"s for {n} plots", "s per plot", "big-file MB/s", "data s per plot",
              "fixed s per plot", f"s per k{args.tiny_k} plot", f"fixed s per k{args.tiny_k} plot",
              "x ours (s per plot)")

    def seconds(tool: str, what: str, in_session: bool) -> float:
        samples = results[(tool, what)]
        return statistics.median(s.extra["send_seconds"] if in_session else s.seconds for s in samples)

    lines = [(SMALL_LABELS[t], t, False) for t in args.small_tools]
    if "ours" in args.small_tools and all(s.extra.get("send_seconds") for w in size for s in results[("ours", w)]):
        lines.insert(args.small_tools.index("ours") + 1, ("  ours, in session (PLOT line -> OK, its records)", "ours", True))
    ours = seconds("ours", "small", False) / n if "ours" in args.small_tools else None
    rows = []
    for label, tool, in_session in lines:
        per_plot = seconds(tool, "small", in_session) / n
        speed = size["big"] / seconds(tool, "big", in_session)
        per_tiny = seconds(tool, "tiny", in_session) / n
        data = size["small"] / speed
        rows.append((label, str(len(results[(tool, "small")])), f"{per_plot * n:.2f}", f"{per_plot:.3f}",
                     f"{speed / 1e6:.0f}", f"{data:.3f}", f"{per_plot - data:.3f}", f"{per_tiny:.3f}",
                     f"{per_tiny - size['tiny'] / speed:.3f}",
                     f"{per_plot / ours:.2f}" if ours and not in_session else ""))
    print_markdown_table(header, rows, ["<", *[">"] * 9])
    print(f"\nevery run, seconds ({n} k{args.small_k} | {n} k{args.tiny_k} | one k{args.big_k}):")
    for _label, tool, in_session in lines:
        print(f"  {'ours in session' if in_session else tool:15} " + "  | ".join(
            " ".join(f"{s.extra['send_seconds'] if in_session else s.seconds:6.2f}" for s in results[(tool, w)])
            for w in ("small", "tiny", "big")))


SMALL_LABELS = {"nc": "nc, file after file", "rsync": "one rsync -e ssh of the directory",
                "ours": "ours: one plot_manager.py cron pass"}


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def run_benchmark(args: argparse.Namespace, scratch: Scratch) -> int:
    from tests.support.netns_farm import NetnsFarm

    started = time.perf_counter()
    print(f"bench_sink: {time.strftime('%Y-%m-%d %H:%M %Z')}, {os.cpu_count()} CPUs ({cpu_model()}), "
          f"{os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / GIB:.0f} GiB RAM, kernel {platform.release()}, "
          f"python {platform.python_version()}, load {os.getloadavg()[0]:.2f}")
    if args.product_commit:
        args.product_tree = extract_product(args.product_commit, scratch.work / "product")
        subject = subprocess.run(["git", "-C", str(REPO), "log", "-1", "--format=%h %s", args.product_commit, "--",
                                  *PRODUCT_PATHS], capture_output=True, text=True, check=False).stdout.strip()
        print(f"product: as of commit {args.product_commit}, whose last product change is {subject[:100]} "
              f"(git archive in {args.product_tree})", flush=True)
    else:
        print(f"product: this working tree, {product_revision(args.product_tree)}", flush=True)
    farm_root = scratch.work / "farm"
    farm_root.mkdir()
    farm = scratch.stack.enter_context(NetnsFarm(farm_root, [HARVESTER]))
    host = farm.host(HARVESTER)
    st = os.stat(f"/run/netns/{host.namespace}")
    rig = Rig(farm, host.address, (st.st_dev, st.st_ino), args.product_tree)
    scratch.stop_first.append(rig.kill_children)
    scratch.stack.callback(rig.uncap_link)  # before the farm goes (the veth goes with it anyway)
    print(f"farm: {HARVESTER} at {host.address} in netns {host.namespace}, up in {farm.up_seconds:.1f} s "
          "(with any wait for the farm lock, which one test farm holds at a time)", flush=True)

    drive_results = small_results = None
    if "drives" in args.parts:
        drive_results = drive_part(args, scratch, rig, farm_root)
    if "small" in args.parts:
        small_results = small_part(args, scratch, rig, farm_root)

    k = args.plots_per_drive
    if drive_results:
        print(f"\n## Drives: N x {k} k{args.plot_k} plots per run, drives {args.drive_mbps:g} MB/s each, link capped "
              f"at {args.link_mbps:g} MB/s; {args.rounds} rounds, round-robin; MB/s = 10^6 bytes/s until on disk\n")
        print_drive_table(args, drive_results)
    if small_results:
        print(f"\n## Small plots: {args.small_plots} x k{args.small_k} one at a time to tmpfs, link uncapped; big file "
              f"k{args.big_k}; medians of {args.small_rounds}\n")
        print_small_table(args, small_results)
    print(f"\nwhole benchmark: {time.perf_counter() - started:.0f} s")
    return 0


def setup() -> int:
    print(f"running: {' '.join(APT)}", flush=True)
    return subprocess.run(APT, check=False).returncode


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.setup:
        return setup()
    try:
        require_root_and_tools("network namespaces, tc, FUSE, loop and tmpfs mounts",
                               ("nc", "rsync", "ssh", "ip", "tc", "mount", "losetup", "mkfs.ext4", "dd"))
        missing = missing_tools()
        if missing:
            raise CheckFailed(f"missing {', '.join(missing)}: run `bench/bench_sink.py --setup` "
                              f"(it runs {' '.join(APT)})")
    except CheckFailed as exc:
        print(f"bench_sink: {exc}", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="bench-sink-", dir=args.work_dir)).resolve()
    return run_in_scratch(work, lambda scratch: run_benchmark(args, scratch))


if __name__ == "__main__":
    sys.exit(main())
