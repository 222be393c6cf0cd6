"""The held-back rule over recorded SMART histories.

Every reading here is a real read: pySMART parsing a real captured smartctl output replayed by
the stand-in (tests/support/fake_smartctl), the same disk read again with grown counters where
a test needs growth. The readings are then placed at the times a test needs, since a history is
the same disk read at different times.
"""

from __future__ import annotations

import pytest

from tests.support.fake_smartctl import SAS_HDD, SATA_HDD, SATA_HDD_FAILING, FakeSmartctl
from utilities.harvester.drive_health import HealthPolicy, Hold, Release, decide_holds, sick_reason
from utilities.harvester.smart import SmartInfo, read_smart
from utilities.harvester.smart_history import Reading, reading_from_smart

HOUR = 3600.0
NOW = 1_900_000_000.0
POLICY = HealthPolicy(temperature_limit_c=50, hot_hysteresis_c=5, window_hours=24,
                      pending_growth_limit=1, reallocated_growth_limit=8, uncorrectable_growth_limit=1)

# The same Seagate SATA disk (serial 00008AXB) as read at different points of its decline.
VARIANTS = {
    "healthy": (SATA_HDD, {}),
    "pending2": (SATA_HDD, {"raw": {"197": 2}}),
    "pending3": (SATA_HDD, {"raw": {"197": 3}}),
    "realloc4": (SATA_HDD, {"raw": {"5": 4}}),
    "pending3_realloc9": (SATA_HDD, {"raw": {"197": 3, "5": 9}}),
    "realloc8": (SATA_HDD, {"raw": {"5": 8}}),
    "crc50": (SATA_HDD, {"raw": {"199": 50}}),
    "hot57": (SATA_HDD, {"temperature": 57}),
    "warm47": (SATA_HDD, {"temperature": 47}),
    "cool44": (SATA_HDD, {"temperature": 44}),
    "hot57_pending2": (SATA_HDD, {"temperature": 57, "raw": {"197": 2}}),
    "failing": (SATA_HDD_FAILING, {}),
    "sas_grown12": (SAS_HDD, {"type": "scsi", "lines": {"Elements in grown defect list": 12}}),
    "standby": (SATA_HDD, {"state": "standby"}),
}


@pytest.fixture(scope="module")
def reads(tmp_path_factory) -> dict[str, SmartInfo]:
    """Each variant read once through pySMART and the stand-in (reads cost a subprocess each)."""
    directory = tmp_path_factory.mktemp("smart")
    fake = FakeSmartctl(directory)
    devices = {}
    for index, (name, (capture, settings)) in enumerate(VARIANTS.items()):
        device = f"/dev/sd{chr(ord('b') + index)}"
        fake.add(device, capture, **settings)
        devices[name] = device
    with pytest.MonkeyPatch.context() as patch:
        fake.install(patch)
        result = {name: read_smart(device, smartctl=fake.path) for name, device in devices.items()}
        assert fake.woken() == []  # the standby variant was not spun up to be read
    return result


def at(reads: dict[str, SmartInfo], variant: str, hours_ago: float, drive: str = "drive1") -> Reading:
    return reading_from_smart(drive, reads[variant], NOW - hours_ago * HOUR)


def decide(history: list[Reading], previous: dict[str, Hold] | None = None,
           releases: dict[str, Release] | None = None, policy: HealthPolicy = POLICY):
    current = history[-1]
    return decide_holds({current.drive: history}, {current.drive: current}, previous or {}, releases or {},
                        policy, current.read_at)


def test_the_reads_carry_what_the_rule_needs(reads) -> None:
    assert reads["pending2"].pending_sectors == 2 and reads["pending2"].serial == reads["healthy"].serial
    assert reads["failing"].health == "FAIL" and reads["hot57"].temperature_c == 57
    assert reads["standby"].state == "standby"


def test_pending_sectors_growing_past_the_limit_hold_the_drive_until_on(reads) -> None:
    history = [at(reads, "healthy", 30), at(reads, "healthy", 20), at(reads, "pending2", 0)]
    decision = decide(history)
    hold = decision.holds["drive1"]
    assert hold.reason == "sectors" and hold.sticky and decision.new == [hold]
    assert "pending sectors 0 -> 2" in hold.detail and "24 h" in hold.detail
    # Later reads do not lift it, even when nothing grows any more, nor alert again.
    later = decide([*history, at(reads, "pending2", -1)], previous=decision.holds)
    assert later.holds == decision.holds and later.new == [] and later.returned == []


def test_reallocated_growth_below_its_limit_is_watched_not_held(reads) -> None:
    assert decide([at(reads, "healthy", 10), at(reads, "realloc4", 0)]).holds == {}
    held = decide([at(reads, "healthy", 10), at(reads, "realloc8", 0)]).holds["drive1"]
    assert held.reason == "sectors" and "reallocated sectors 0 -> 8" in held.detail


def test_crc_errors_are_the_cables_not_the_disks(reads) -> None:
    assert decide([at(reads, "healthy", 10), at(reads, "crc50", 0)]).holds == {}


def test_growth_is_measured_over_the_window_only(reads) -> None:
    """Two pending sectors that appeared three days ago and stayed: nothing grew in 24 h."""
    history = [at(reads, "healthy", 72), at(reads, "pending2", 48), at(reads, "pending2", 25), at(reads, "pending2", 0)]
    assert decide(history).holds == {}
    # With a week's window the same history holds the drive.
    week = HealthPolicy(window_hours=168)
    assert decide(history, policy=week).holds["drive1"].reason == "sectors"


def test_a_history_younger_than_the_window_counts_from_its_first_read(reads) -> None:
    assert decide([at(reads, "healthy", 2), at(reads, "pending3", 0)]).holds["drive1"].reason == "sectors"


def test_a_first_read_alone_holds_nothing_whatever_its_counts(reads) -> None:
    assert decide([at(reads, "pending3", 0)]).holds == {}


def test_a_new_disk_under_the_same_drive_name_starts_its_own_history(reads) -> None:
    """drive1 was the SATA disk with no grown defects; a SAS disk with 12 took its place."""
    assert decide([at(reads, "healthy", 5), at(reads, "sas_grown12", 0)]).holds == {}


def test_failed_assessment_holds_at_once(reads) -> None:
    decision = decide([at(reads, "failing", 0)])
    assert decision.holds["drive1"].reason == "failing" and decision.holds["drive1"].sticky


def test_on_accepts_the_evidence_so_far_and_new_growth_holds_again(reads) -> None:
    history = [at(reads, "healthy", 10), at(reads, "pending2", 5)]
    release = {"drive1": Release("drive1", NOW - 4 * HOUR, "sectors")}
    # Read again after -on: the two pending sectors the farmer accepted hold nothing.
    assert decide([*history, at(reads, "pending2", 0)], releases=release).holds == {}
    # One more pending sector after the release does.
    again = decide([*history, at(reads, "pending2", 3), at(reads, "pending3", 0)], releases=release)
    assert again.holds["drive1"].reason == "sectors" and "2 -> 3" in again.holds["drive1"].detail


def test_on_for_a_failing_drive_keeps_it_in_service(reads) -> None:
    release = {"drive1": Release("drive1", NOW - HOUR, "failing")}
    assert decide([at(reads, "failing", 2), at(reads, "failing", 0)], releases=release).holds == {}
    # A release of a sector hold does not accept a FAIL that came later.
    sectors = {"drive1": Release("drive1", NOW - HOUR, "sectors")}
    assert decide([at(reads, "failing", 0)], releases=sectors).holds["drive1"].reason == "failing"


def test_hot_drive_is_held_and_returns_only_below_the_hysteresis(reads) -> None:
    hot = decide([at(reads, "hot57", 0)])
    hold = hot.holds["drive1"]
    assert hold.reason == "hot" and not hold.sticky and hot.new == [hold]
    assert "57°C" in hold.detail and "45°C" in hold.detail
    # 47°C is under the limit (50) but not under 50 - 5: still held, nothing sent.
    warm = decide([at(reads, "hot57", 20 / 60), at(reads, "warm47", 10 / 60)], previous=hot.holds)
    assert warm.holds == hot.holds and warm.new == [] and warm.returned == []
    cooled = decide([at(reads, "warm47", 10 / 60), at(reads, "cool44", 0)], previous=warm.holds)
    assert cooled.holds == {} and [h.drive for h, _ in cooled.returned] == ["drive1"]
    assert cooled.returned[0][1].temperature_c == 44


def test_hot_drive_whose_sectors_grow_is_held_for_good(reads) -> None:
    hot = decide([at(reads, "hot57", 1)])
    worse = decide([at(reads, "hot57", 1), at(reads, "hot57_pending2", 0)], previous=hot.holds)
    assert worse.holds["drive1"].reason == "sectors" and worse.new == [worse.holds["drive1"]]


def test_a_drive_in_standby_is_not_read_and_keeps_its_state(reads) -> None:
    standby = at(reads, "standby", 0)
    assert standby.state == "standby" and standby.temperature_c is None and standby.pending is None
    hot = decide([at(reads, "hot57", 1)]).holds
    kept = decide_holds({}, {"drive1": standby}, hot, {}, POLICY, NOW)
    assert kept.holds == hot and kept.new == [] and kept.returned == []
    assert decide_holds({}, {"drive1": standby}, {}, {}, POLICY, NOW).holds == {}


def test_sick_reason_names_every_counter_past_its_limit(reads) -> None:
    reason = sick_reason([at(reads, "healthy", 3), at(reads, "pending3_realloc9", 0)], POLICY)
    assert reason is not None and reason[0] == "sectors"
    assert "pending sectors 0 -> 3" in reason[1] and "reallocated sectors 0 -> 9" in reason[1]
