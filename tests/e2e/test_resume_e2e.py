"""A dropped transfer resumes where it stopped, on the namespace farm (issue 13).

The plot streams over a throttled link into a harvester whose journal chunk is small; the link
is pulled once about 30, 60 or 95% of the plot has gone onto the wire.  The bytes on the wire are
counted by the kernel: the htb classes that carry the data ports on the harvester's veth (SSH
and control lines go through another class), so the retry's count is of plot data only, less
the known size of each packet's headers.  The retry must put on the wire no more than what had not arrived, plus one chunk.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.e2e_farm import THROTTLED_TRANSFER, E2EFarm, FarmHarvester, Plotter, file_hash
from tests.support.loopdrives import requires_root_and_loop
from tests.support.netns_farm import requires_netns
from tests.support.plotmaker import cached_plot, copy_plot
from tests.support.waiting import DEADLINE, wait_until
from utilities.transfer.journal import read_journal
from utilities.transfer.part_files import open_directory, part_name

pytestmark = [pytest.mark.root, requires_root_and_loop, requires_netns, pytest.mark.timeout(900)]

HARVESTER = "chianas01"
CHUNK = 256 * 1024
RATE = "4mbit"  # a k18 plot of ~4 MB then streams for ~8 s: time to pull the link at a chosen point
# Every data packet to the harvester carries Ethernet + IPv4 + TCP headers, and TCP timestamps
# when the kernel uses them (the plotter never has SACK blocks to send: it receives no data on
# these connections); a SYN carries a few bytes of options more.
TCP_TIMESTAMPS = Path("/proc/sys/net/ipv4/tcp_timestamps").read_text().strip() != "0"
HEADER_BYTES = 14 + 20 + 20 + (12 if TCP_TIMESTAMPS else 0)
SYN_EXTRA_BYTES = 64


@pytest.fixture(scope="module")
def plot_size() -> int:
    return cached_plot("og").stat().st_size


@pytest.fixture
def farm(tmp_path: Path, plot_size: int) -> Iterator[E2EFarm]:
    settings = {"resume_chunk_mib": CHUNK / (1024 * 1024)}
    with E2EFarm(tmp_path / "farm", {HARVESTER: 1}, plot_size, harvester_settings=settings) as farm:
        yield farm


def data_class_counters(farm: E2EFarm) -> tuple[int, int]:
    """(bytes, packets) the kernel has sent through the data ports' htb classes to the harvester."""
    veth = farm.net.host(HARVESTER).veth_host_side
    shown = subprocess.run(["tc", "-s", "class", "show", "dev", veth], capture_output=True, text=True, check=True).stdout
    total_bytes = total_packets = 0
    for block in re.split(r"\n(?=class )", shown):
        if re.match(r"class htb 1:1[0-9a-f] ", block):
            sent = re.search(r"Sent (\d+) bytes (\d+) pkt", block)
            assert sent is not None, block
            total_bytes += int(sent.group(1))
            total_packets += int(sent.group(2))
    return total_bytes, total_packets


def plot_data(counted: tuple[int, int], before: tuple[int, int]) -> int:
    """The plot bytes sent between two counter readings: bytes on the wire less the headers
    (exact but for a SYN's options: at most SYN_EXTRA_BYTES per connection, counted as data)."""
    return (counted[0] - before[0]) - HEADER_BYTES * (counted[1] - before[1])


def held_chunks(harvester: FarmHarvester, name: str) -> int:
    """Chunks the journal of ``name``'s kept part vouches for (0 without a whole journal)."""
    for drive in harvester.drives.drives:
        if (drive.mountpoint / part_name(name)).exists():
            dir_fd = open_directory(drive.mountpoint)
            try:
                journal, _age = read_journal(dir_fd, part_name(name))
            finally:
                os.close(dir_fd)
            return len(journal.chunks) if journal is not None else 0
    return 0


def cut_at(farm: E2EFarm, plotter: Plotter, fraction: float) -> None:
    """A run whose link to the harvester is pulled once ``fraction`` of the plot has gone onto
    the wire; it fails, the receiver gives up, the link comes back."""
    start = data_class_counters(farm)
    target = int(farm.plot_size * fraction)
    sender = plotter.popen()
    try:
        wait_until(f"{target} bytes on the wire", lambda: plot_data(data_class_counters(farm), start) >= target)
        farm.net.link_down(HARVESTER)
        out, err = sender.communicate(timeout=DEADLINE * 4)
    finally:
        if sender.poll() is None:
            sender.kill()
            sender.wait(DEADLINE)
        farm.net.link_up(HARVESTER)
    assert sender.returncode == 1, out + err
    wait_until("the receiver to give up", lambda: not farm.receivers(HARVESTER))


@pytest.mark.parametrize("fraction", [0.3, 0.6, 0.95])
def test_a_pulled_link_costs_the_retry_only_what_had_not_arrived_plus_one_chunk(farm: E2EFarm, fraction: float) -> None:
    plotter = farm.add_plotter("plotter-r", **THROTTLED_TRANSFER)
    source = copy_plot("og", plotter.plot_dir)
    size, digest = source.stat().st_size, file_hash(source)
    harvester = farm.harvesters[HARVESTER]
    with farm.throttled(HARVESTER, RATE):
        start = data_class_counters(farm)
        cut_at(farm, plotter, fraction)
        after_cut = data_class_counters(farm)
        held = min(held_chunks(harvester, source.name) * CHUNK, size)
        assert source.exists() and harvester.plots() == []
        arrived = plot_data(after_cut, start)
        assert held >= (min(arrived, size) // CHUNK - 1) * CHUNK and held > 0

        retry = plotter.run()
        resent = plot_data(data_class_counters(farm), after_cut)
    assert retry.returncode == 0, retry.stdout + retry.stderr
    assert {p.name: file_hash(p) for p in harvester.plots()} == {source.name: digest}
    assert not source.exists() and harvester.leftovers() == []
    # What the kernel put on the wire for the retry: the chunks the part did not hold (plus any
    # segment TCP sent twice when the throttle's queue dropped one), and at most what had not
    # arrived plus one chunk.
    assert size - held <= resent <= size - held + CHUNK, (resent, size, held)
    assert resent <= max(0, size - arrived) + CHUNK + SYN_EXTRA_BYTES, (resent, size, arrived)
    assert plotter.history()["bytes_saved_by_resume_24h"] == held


def test_a_kept_part_goes_once_its_source_is_gone_from_the_plotter(farm: E2EFarm) -> None:
    plotter = farm.add_plotter("plotter-r", **THROTTLED_TRANSFER)
    source = copy_plot("og", plotter.plot_dir)
    harvester = farm.harvesters[HARVESTER]
    with farm.throttled(HARVESTER, RATE):
        cut_at(farm, plotter, 0.5)
    farm.harvester_pass(HARVESTER)
    assert [p.name for p in harvester.leftovers()] == [part_name(source.name)]  # kept for a resume
    source.unlink()  # the farmer deleted it: no resume can ever come
    nothing = plotter.run()
    assert nothing.returncode == 0, nothing.stdout + nothing.stderr
    farm.harvester_pass(HARVESTER)
    assert harvester.leftovers() == []
    assert not any(n.endswith(".journal") for d in harvester.drives.drives for n in os.listdir(d.mountpoint))
