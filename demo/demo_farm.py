"""A single-machine demo farm: real loop-mounted plot drives, real k=18 plots, real runs.

It builds a small harvester in a temporary directory, runs drive_manager.py's cron pass and the
reports exactly as a farmer would, prints what happened, and removes everything it made (unless
``--keep``, which leaves the farm mounted and prints how to tear it down).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support.harvester_env import Harvester, harvester_config  # noqa: E402
from tests.support.loopdrives import LoopDrives  # noqa: E402
from tests.support.plotmaker import copy_plot, make_plot  # noqa: E402

LAYOUT = [
    "enclosure0/front/column0/drive0",
    "enclosure0/front/column0/drive1",
    "enclosure0/front/column1/drive2",
    "enclosure0/front/column1/drive3",
]


def step(title: str) -> None:
    print(f"\n=== {title} ===", flush=True)


def show(harvester: Harvester, *args: str) -> None:
    print(f"$ drive_manager.py {' '.join(args)}".rstrip(), flush=True)
    proc = harvester.run(*args, check=False)
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"demo: drive_manager.py {' '.join(args)} failed with exit status {proc.returncode}")


def run_demo(root: Path) -> None:
    step(f"Demo farm in {root}: four 64 MiB ext4 loop drives, enclosure layout")
    with LoopDrives(root / "mnt", LAYOUT, size_mb=64) as drives:
        for drive in drives.drives:
            print(f"  {drive.device:<12} {drive.mountpoint}  UUID={drive.uuid}")
        step("Making real k=18 plots with chiapos (one OG, then pool plots)")
        first = make_plot(drives.drives[0].mountpoint, kind="og")
        print(f"  {first.name} ({first.stat().st_size:,} bytes)")
        for _ in range(2):
            print(f"  {copy_plot('pool', drives.drives[0].mountpoint).name}")
        plot_size = first.stat().st_size
        harvester = Harvester(root)
        config = harvester_config(root, [str(root / "mnt" / "enclosure*/*/column*/drive*")], plot_size)
        config["harvester"]["smartctl"] = "smartctl"
        harvester.write_config(config)
        print(f"  config: {harvester.config_path} (plot_size = one k=18 plot, {plot_size:,} bytes)")

        step("Cron pass: discover drives, choose the receive drive, write receive_plot.sh and the export")
        show(harvester)
        print(f"receive_plot.sh now writes to: {harvester.receive_dir()}")
        step("Plot report (-pr)")
        show(harvester, "-pr")
        step("Take drive0 offline (-off drive0): the receive drive moves on at once")
        show(harvester, "-off", "drive0")
        print(f"receive_plot.sh now writes to: {harvester.receive_dir()}")
        show(harvester, "-on", "drive0")
        step("Drive temperatures (-ct): loop devices have no SMART data, so they show n/a")
        show(harvester, "-ct")
        print(f"\nExport for plotters and farm reports: {harvester.export_file}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keep", action="store_true", help="leave the demo directory (drives are still unmounted)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("demo: needs root to make loop-mounted drives (run: sudo ./demo.sh)", file=sys.stderr)
        return 1
    root = Path(tempfile.mkdtemp(prefix="plot-manager-demo-"))
    try:
        run_demo(root)
    finally:
        if not args.keep:
            subprocess.run(["rm", "-rf", "--one-file-system", str(root)], check=False)
        else:
            print(f"demo directory kept: {root}")
    print("\nDemo finished; every drive it made is unmounted and detached.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
