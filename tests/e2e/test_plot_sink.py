"""A harvester is a plot sink (issue 12): several plots at once, each onto its own drive.

Real everything: harvesters are namespaces with their own sshd, drives are loop-mounted ext4,
plots are chiapos plots, and plot_manager.py / drive_manager.py / receive_plot.py run as the
farm runs them. A ``ReceiveWatch`` samples the harvester's drive claims and part files for the
whole of each run, so "never two receives on one drive" is checked at every moment, not just
at the end.

Each plot stream to the harvester crawls (plot data only, SSH is never slowed) while a test waits for
what it wants to see -- four drives receiving at once, a second plotter answered busy -- and is
sped up as soon as that has been seen: no step depends on how fast this machine is, and the
file stays short.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.e2e_farm import THROTTLED_TRANSFER, E2EFarm, FarmHarvester, Plotter, ReceiveWatch, file_hash
from tests.support.loopdrives import requires_root_and_loop
from tests.support.netns_farm import requires_netns
from tests.support.plotmaker import cached_plot, copy_plot
from tests.support.waiting import DEADLINE, wait_until

pytestmark = [pytest.mark.root, requires_root_and_loop, requires_netns, pytest.mark.timeout(600)]

HARVESTER = "chianas01"
DRIVES = 4
#: Each plot stream while a test waits for receives to overlap: a k=18 plot (4 MB) would take
#: about a minute, far longer than anything the test waits for.
CRAWL = "500kbit"
#: Each stream once the test has seen what it waited for: a plot in about a second.
BRISK = "32mbit"

Sources = dict[Path, str]  # a plot on a plotter -> its content hash, taken before any transfer


@pytest.fixture(scope="module")
def plot_size() -> int:
    return cached_plot("pool").stat().st_size


@pytest.fixture
def farm(tmp_path: Path, plot_size: int) -> Iterator[E2EFarm]:
    settings = {"concurrent_receive_drives": DRIVES, "receives_per_drive": 1}
    with E2EFarm(tmp_path / "farm", {HARVESTER: DRIVES}, plot_size, harvester_settings=settings) as farm:
        yield farm


# -- helpers ----------------------------------------------------------------------------------


def _plotter(farm: E2EFarm, name: str, **transfer: Any) -> Plotter:
    """A plotter whose sessions each stream on ports the farm's throttle slows one by one."""
    return farm.add_plotter(name, **THROTTLED_TRANSFER, **transfer)


def _make_plots(plotter: Plotter, count: int) -> Sources:
    """``count`` real plots (pool and OG in turn) in the plotter's directory, hashed."""
    made = {}
    for index in range(count):
        path = copy_plot(("pool", "og")[index % 2], plotter.plot_dir)
        made[path] = file_hash(path)
    return made


@contextlib.contextmanager
def _running(plotter: Plotter) -> Iterator[subprocess.Popen[str]]:
    """A plotter's cron pass in the background; killed (by its pid) if still going at the end."""
    process = plotter.popen()
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=DEADLINE)


@contextlib.contextmanager
def _receives_in_flight(farm: E2EFarm, plotter: Plotter, watch: ReceiveWatch, drives: int) -> Iterator[subprocess.Popen[str]]:
    """A plotter run with plot data arriving on ``drives`` drives at once (the link crawls until
    the test speeds it up, and is whole again after the block)."""
    with farm.throttled(HARVESTER, CRAWL), _running(plotter) as sender:
        wait_until(f"plot data arriving on {drives} drives at once", lambda: len(watch.receiving()) >= drives)
        yield sender


def _answered_busy(plotter: Plotter) -> bool:
    """The plotter logged a busy answer ("<harvester> is busy (...): <plot> goes elsewhere or later")."""
    return f"{HARVESTER} is busy (" in plotter.log_text()


def _streaming_receive(harvester: FarmHarvester, watch: ReceiveWatch) -> Any:
    """One receive whose plot data is arriving now (its ReceiveInFlight)."""

    def find() -> Any:
        streaming = watch.receiving()
        return next((r for r in harvester.receives() if r.drive in streaming and r.pid), None)

    return wait_until("a receive with its plot data arriving", find)


def _drive_of(harvester: FarmHarvester, name: str) -> Path:
    return harvester.drive_dirs()[name]


def _assert_nothing_lost(harvester: FarmHarvester, sources: Sources) -> None:
    """Every plot is on its plotter or landed intact (or both, killed between OK and delete);
    nothing landed twice, nothing landed corrupt, nothing landed that nobody sent."""
    landed: dict[str, list[Path]] = {}
    for path in harvester.plots():
        landed.setdefault(path.name, []).append(path)
    assert set(landed) <= {s.name for s in sources}, sorted(landed)
    for source, digest in sources.items():
        copies = landed.get(source.name, [])
        assert len(copies) <= 1, f"{source.name} landed {len(copies)} times: {copies}"
        assert all(file_hash(copy) == digest for copy in copies), f"{source.name} landed corrupt"
        if not copies:
            assert source.exists() and file_hash(source) == digest, f"{source.name} is lost"


def _assert_all_landed_once(harvester: FarmHarvester, sources: Sources) -> None:
    """Every plot landed exactly once, byte for byte; every source gone; nothing half done."""
    names = Counter(p.name for p in harvester.plots())
    assert names == Counter(s.name for s in sources), names
    assert {p.name: file_hash(p) for p in harvester.plots()} == {s.name: h for s, h in sources.items()}
    assert [s for s in sources if s.exists()] == []
    assert harvester.leftovers() == []
    wait_until("every drive claim released", lambda: not harvester.receives())


def _assert_no_failure_recorded(plotter: Plotter, moved: int) -> None:
    history = plotter.history()
    failed = [t for t in history["transfers"] if not t["ok"]]
    assert failed == [] and history["failed_attempts_24h"] == 0, failed
    assert history["plots_moved_24h"] == moved


def _next_run_delivers(farm: E2EFarm, plotter: Plotter, sources: Sources) -> None:
    """After the harvester's next minute, one more plotter run sends what is left."""
    farm.harvester_pass(HARVESTER)
    proc = plotter.run()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _assert_all_landed_once(farm.harvesters[HARVESTER], sources)


# -- the sink ---------------------------------------------------------------------------------


def test_two_plotters_share_four_drives_one_receive_per_drive_and_every_plot_lands_once(farm: E2EFarm) -> None:
    harvester = farm.harvesters[HARVESTER]
    first = _plotter(farm, "plotter-a", hostname="chiaplot01", max_concurrent_transfers=4)
    second = _plotter(farm, "plotter-b", hostname="chiaplot02", max_concurrent_transfers=2)
    sources = _make_plots(first, 4) | _make_plots(second, 4)
    # The second plotter starts once the first holds every drive of the set: it must be told busy.
    with ReceiveWatch(harvester) as watch, _receives_in_flight(farm, first, watch, DRIVES) as one, _running(second) as two:
        wait_until("the second plotter to be answered busy", lambda: _answered_busy(second))
        farm.throttle(HARVESTER, BRISK)
        outputs = [one.communicate(timeout=DEADLINE), two.communicate(timeout=DEADLINE)]
    for process, (out, err) in zip((one, two), outputs, strict=True):
        assert process.returncode == 0, out + err
    if second.waiting_plots():  # busy past its wait: the plots go with its next run
        again = second.run()
        assert again.returncode == 0, again.stdout + again.stderr
    assert watch.most_receiving == DRIVES
    assert watch.crowded_claims == [] and watch.crowded_parts == []
    _assert_all_landed_once(harvester, sources)
    assert {p.parent for p in harvester.plots()} == {d.mountpoint for d in harvester.drives.drives}
    # Busy is "not now", never a failed transfer.
    _assert_no_failure_recorded(first, 4)
    _assert_no_failure_recorded(second, 4)


# -- faults with several receives in flight ---------------------------------------------------


def test_receiver_killed_mid_stream_loses_nothing(farm: E2EFarm) -> None:
    harvester = farm.harvesters[HARVESTER]
    plotter = _plotter(farm, "plotter-a", max_concurrent_transfers=4)
    sources = _make_plots(plotter, 4)
    with ReceiveWatch(harvester) as watch, _receives_in_flight(farm, plotter, watch, DRIVES) as sender:
        victim = _streaming_receive(harvester, watch)
        assert victim.pid in farm.receivers(HARVESTER)  # only ever a receiver this test started
        os.kill(victim.pid, signal.SIGKILL)
        farm.throttle(HARVESTER, BRISK)
        out, err = sender.communicate(timeout=DEADLINE)
    assert sender.returncode == 1 and "FAILED" in out, out + err
    assert watch.crowded_claims == []
    assert (plotter.plot_dir / victim.plot).exists()
    _assert_nothing_lost(harvester, sources)
    farm.harvester_pass(HARVESTER)
    assert harvester.leftovers() == []
    _next_run_delivers(farm, plotter, sources)


def test_link_down_mid_stream_loses_nothing(farm: E2EFarm) -> None:
    harvester = farm.harvesters[HARVESTER]
    # The farm's idle limit (20 s), not a shorter one: a stream crawling at 500 kbit/s takes
    # about 17 s to hand the kernel each 1 MiB chunk once its socket buffer is full, and the
    # plotter counts a chunk not taken within the idle limit as a stall, so a shorter limit
    # would fail these streams with or without the link.
    plotter = _plotter(farm, "plotter-a", max_concurrent_transfers=4)
    sources = _make_plots(plotter, 4)
    with ReceiveWatch(harvester) as watch, _receives_in_flight(farm, plotter, watch, DRIVES) as sender:
        farm.net.link_down(HARVESTER)
        try:
            out, err = sender.communicate(timeout=DEADLINE)
        finally:
            farm.net.link_up(HARVESTER)
        wait_until("the receivers to give up", lambda: not farm.receivers(HARVESTER))
    assert sender.returncode == 1, out + err
    assert watch.crowded_claims == []
    _assert_nothing_lost(harvester, sources)
    farm.harvester_pass(HARVESTER)
    assert harvester.leftovers() == []
    _next_run_delivers(farm, plotter, sources)


def test_plotter_killed_mid_run_loses_nothing(farm: E2EFarm) -> None:
    harvester = farm.harvesters[HARVESTER]
    plotter = _plotter(farm, "plotter-a", max_concurrent_transfers=4)
    sources = _make_plots(plotter, 4)
    with ReceiveWatch(harvester) as watch, _receives_in_flight(farm, plotter, watch, DRIVES) as sender:
        sender.kill()
        sender.wait(DEADLINE)
        wait_until("the receivers to notice the plotter died", lambda: not farm.receivers(HARVESTER))
    assert watch.crowded_claims == []
    assert not harvester.receives()  # the claims died with their receivers
    _assert_nothing_lost(harvester, sources)
    farm.harvester_pass(HARVESTER)
    assert harvester.leftovers() == []
    _next_run_delivers(farm, plotter, sources)  # no lock left stuck either


def test_a_drive_filling_up_sends_the_next_plot_to_the_next_drive_of_the_set(farm: E2EFarm) -> None:
    """Three sessions of two plots each; the drive of one fills up under its first plot (whose
    space was reserved): that session's next plot goes to the drive nobody had claimed."""
    harvester = farm.harvesters[HARVESTER]
    plotter = _plotter(farm, "plotter-a", max_concurrent_transfers=3)
    sources = _make_plots(plotter, 6)

    with ReceiveWatch(harvester) as watch, _receives_in_flight(farm, plotter, watch, 3) as sender:
        full = _drive_of(harvester, _streaming_receive(harvester, watch).drive)  # space reserved before READY
        claimed = {_drive_of(harvester, r.drive) for r in harvester.receives()}
        harvester.drives.fill(next(d for d in harvester.drives.drives if d.mountpoint == full), 0)
        farm.throttle(HARVESTER, BRISK)
        out, err = sender.communicate(timeout=DEADLINE)
    assert sender.returncode == 0, out + err
    if plotter.waiting_plots():  # a plot answered busy past its wait goes with the next run
        again = plotter.run()
        assert again.returncode == 0, again.stdout + again.stderr
    assert watch.crowded_claims == [] and watch.crowded_parts == []
    _assert_all_landed_once(harvester, sources)
    assert len([p for p in harvester.plots() if p.parent == full]) == 1  # only the one it had reserved
    # Its session's next plot went to the set's drive nobody had claimed (the others were taken).
    assert [p for p in harvester.plots() if p.parent not in claimed], sorted(map(str, harvester.plots()))
    _assert_no_failure_recorded(plotter, 6)


def test_no_drive_of_the_set_with_room_answers_no_space_and_keeps_every_plot(farm: E2EFarm) -> None:
    """The export still says there is room, but every drive filled since: two sessions at once
    are refused before a byte streams, and the plots go once room comes back."""
    harvester = farm.harvesters[HARVESTER]
    plotter = _plotter(farm, "plotter-a", max_concurrent_transfers=2)
    sources = _make_plots(plotter, 2)
    for drive in harvester.drives.drives:
        harvester.drives.fill(drive, 0)
    with ReceiveWatch(harvester) as watch:
        proc = plotter.run()
    assert "no space" in proc.stdout, proc.stdout + proc.stderr
    assert watch.crowded_claims == []
    assert sorted(plotter.waiting_plots()) == sorted(sources)
    assert harvester.plots() == [] and harvester.leftovers() == []
    for drive in harvester.drives.drives:
        harvester.drives.unfill(drive)
    _next_run_delivers(farm, plotter, sources)
