"""A single-machine demo farm: a plotter and a harvester, real drives, real plots, real SSH.

The harvester is a network namespace running its own sshd, with four loop-mounted ext4 plot
drives in the enclosure layout; the plotter is this machine. Real k=18 plots are made with
chiapos on the plotter, ``plot_manager.py`` sends them (SSH for control, netcat for the data,
xxh3-128 on both ends), and the harvester's ``drive_manager.py`` reports them. Everything it
makes is removed at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support.e2e_farm import E2EFarm  # noqa: E402
from tests.support.plotmaker import make_plot  # noqa: E402

HARVESTER = "chianas01"


def step(title: str) -> None:
    print(f"\n=== {title} ===", flush=True)


def show(proc: subprocess.CompletedProcess[str], what: str) -> None:
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"demo: {what} failed with exit status {proc.returncode}")


def run_demo(root: Path) -> None:
    step("Making the plotter's first plot (chiapos, k=18) to size the demo drives")
    staging = root / "staging"
    staging.mkdir()
    sample = make_plot(staging, kind="pool")
    plot_size = sample.stat().st_size
    print(f"  {sample.name}: {plot_size:,} bytes")

    step(f"Demo farm in {root}: harvester {HARVESTER} (own network namespace + sshd), four 64 MiB drives")
    with E2EFarm(root / "farm", {HARVESTER: 4}, plot_size) as farm:
        harvester = farm.harvesters[HARVESTER]
        for drive in harvester.drives.drives:
            print(f"  {drive.device:<12} {drive.mountpoint}  UUID={drive.uuid}")
        print(f"  harvester address {farm.net.host(HARVESTER).address}, SSH host key pinned in {farm.net.known_hosts}")
        print(f"  receive_plot.sh points at: {farm.export(HARVESTER)['receive_dir']}")

        step("Plotter: three finished plots (one OG, two pool)")
        plot_dir = farm.plotter.plot_dir
        plot_dir.mkdir(parents=True, exist_ok=True)
        shutil.move(sample, plot_dir / sample.name)
        make_plot(plot_dir, kind="og")
        make_plot(plot_dir, kind="pool")
        for plot in sorted(plot_dir.iterdir()):
            print(f"  {plot.name}")

        step("plot_manager.py --dry-run")
        show(farm.plotter.run("--dry-run"), "plot_manager.py --dry-run")
        step("plot_manager.py (the cron job): send, verify end to end, delete the sources")
        show(farm.plotter.run(), "plot_manager.py")
        print(f"  left on the plotter: {sorted(p.name for p in plot_dir.iterdir()) or 'nothing'}")
        step("plot_manager.py --history")
        show(farm.plotter.run("--history"), "plot_manager.py --history")

        step(f"Harvester {HARVESTER}: drive_manager.py cron pass, then its plot report (-pr)")
        farm.harvester_pass(HARVESTER)
        show(farm.harvester_pass(HARVESTER, "-pr"), "drive_manager.py -pr")
        step("drive_manager.py -ct (loop devices have no SMART data: n/a)")
        show(farm.harvester_pass(HARVESTER, "-ct"), "drive_manager.py -ct")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.parse_args()
    if os.geteuid() != 0:
        print("demo: needs root for loop drives and the harvester's network namespace (run: sudo ./demo.sh)", file=sys.stderr)
        return 1
    root = Path(tempfile.mkdtemp(prefix="plot-manager-demo-"))
    try:
        run_demo(root)
    finally:
        subprocess.run(["rm", "-rf", "--one-file-system", str(root)], check=False)
    print("\nDemo finished: every drive, namespace and process it made is gone.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
