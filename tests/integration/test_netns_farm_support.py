"""Self-tests of the netns farm: harvesters as network namespaces with real sshd.

Every SSH-level test of the plotter trusts ``NetnsFarm`` to (a) behave like separate machines
on one LAN, reached with host-key checking on, seeing drives mounted while they run, and
(b) leave nothing behind on a shared machine, even when a test fails.  Both are checked
here with independent observers (``ip netns list``, ``ip link``, /proc/mounts, /proc/<pid>),
never with the farm's own bookkeeping.
"""

from __future__ import annotations

import fcntl
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from tests.support.loopdrives import LoopDrives, mounts, requires_root_and_loop
from tests.support.netns_farm import (
    BRIDGE_ADDRESS,
    HARVESTER_ENV,
    LOCK_PATH,
    FarmError,
    NetnsFarm,
    port_open,
    requires_netns,
)
from tests.support.waiting import DEADLINE, wait_until

pytestmark = [pytest.mark.root, requires_netns]

NAMES = ["chianas01", "chianas02"]


# --- independent observers -------------------------------------------------------------------


def netns_names() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def link_names() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}


def mountpoints_at_or_under(root: Path) -> list[str]:
    return [mp for _, mp, _ in mounts() if mp == str(root) or mp.startswith(str(root) + "/")]


def process_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def bridge_address_present() -> bool:
    out = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, check=True).stdout
    return f" {BRIDGE_ADDRESS}/" in out


def lock_is_free() -> bool:
    fd = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


class Footprint:
    """What a live farm occupies, recorded while it is up, checked for absence afterwards."""

    def __init__(self, farm: NetnsFarm, extra_pids: list[int] | None = None) -> None:
        self.root = farm.root
        self.state_dir = farm.state_dir
        self.namespaces = {h.namespace for h in farm.harvesters}
        self.links = {farm.bridge} | {h.veth_host_side for h in farm.harvesters}
        self.pids = [pid for h in farm.harvesters if (pid := farm.sshd_pid(h.name)) is not None]
        self.pids += extra_pids or []
        assert self.namespaces <= netns_names()
        assert self.links <= link_names()
        assert all(process_alive(pid) for pid in self.pids)
        assert mountpoints_at_or_under(self.root) == [str(self.root)]

    def assert_gone(self) -> None:
        assert not self.namespaces & netns_names()
        assert not self.links & link_names()
        assert not [pid for pid in self.pids if process_alive(pid)]
        assert mountpoints_at_or_under(self.root) == []
        assert not self.state_dir.exists()
        assert not bridge_address_present()
        assert lock_is_free()


def _has(tool: str) -> bool:
    return any(os.access(Path(d, tool), os.X_OK) for d in os.environ.get("PATH", "").split(os.pathsep))


# --- one farm shared by the tests that leave it as they found it ------------------------------


@pytest.fixture(scope="class")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetnsFarm]:
    """Class-scoped: the farm (and the farm lock) is gone before the tests with own farms run."""
    root = tmp_path_factory.mktemp("netns-farm")
    with NetnsFarm(root, NAMES) as f:
        yield f
    assert mountpoints_at_or_under(root) == []


class TestSharedFarm:
    def test_harvesters_get_their_addresses_and_namespaces(self, farm: NetnsFarm) -> None:
        assert [h.name for h in farm.harvesters] == NAMES
        assert [h.address for h in farm.harvesters] == ["10.213.77.11", "10.213.77.12"]
        for h in farm.harvesters:
            assert h.namespace.startswith("pmh-") and h.namespace in netns_names()
            assert len(h.veth_host_side) <= 15 and h.veth_host_side in link_names()
            addrs = farm.exec_in(h.name, ["ip", "-o", "-4", "addr", "show"], check=True).stdout
            assert f"inet {h.address}/24" in addrs
            # No default route: a harvester can reach the farm's /24 and nothing else.
            routes = farm.exec_in(h.name, ["ip", "-4", "route", "show"], check=True).stdout
            assert "default" not in routes
        assert len(farm.bridge) <= 15

    def test_paramiko_connects_with_host_key_checking(self, farm: NetnsFarm, tmp_path: Path) -> None:
        known = paramiko.HostKeys(str(farm.known_hosts))
        for h in farm.harvesters:
            client = farm.ssh(h.name)
            try:
                server_key = client.get_transport().get_remote_server_key()  # type: ignore[union-attr]
                assert known.check(h.address, server_key)
            finally:
                client.close()

    def test_empty_known_hosts_is_rejected(self, farm: NetnsFarm, tmp_path: Path) -> None:
        empty = tmp_path / "known_hosts"
        empty.write_text("")
        with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
            farm.ssh("chianas01", known_hosts=empty)

    def test_wrong_host_key_is_rejected(self, farm: NetnsFarm, tmp_path: Path) -> None:
        """chianas02's key listed for chianas01's address: a man in the middle is caught."""
        lines = farm.known_hosts.read_text().splitlines()
        key_of_02 = lines[1].split(" ", 1)[1]
        wrong = tmp_path / "known_hosts"
        wrong.write_text(f"{farm.host('chianas01').address} {key_of_02}\n")
        with pytest.raises(paramiko.BadHostKeyException):
            farm.ssh("chianas01", known_hosts=wrong)

    def test_run_returns_output_exit_status_and_runs_in_the_namespace(self, farm: NetnsFarm) -> None:
        rc, out, err = farm.run("chianas01", "echo out; echo err >&2; exit 3")
        assert (rc, out, err) == (3, "out\n", "err\n")
        for h in farm.harvesters:
            rc, out, _ = farm.run(h.name, f"echo ${HARVESTER_ENV}; ip -o -4 addr show dev eth0")
            assert rc == 0
            name, addr_line = out.splitlines()
            assert name == h.name
            assert f"inet {h.address}/24" in addr_line

    def test_run_drains_large_stdout_and_stderr(self, farm: NetnsFarm) -> None:
        rc, out, err = farm.run("chianas02", "head -c 3000000 /dev/zero | tr '\\0' e >&2; head -c 2000000 /dev/zero")
        assert rc == 0 and len(out) == 2_000_000 and len(err) == 3_000_000

    def test_sftp_works(self, farm: NetnsFarm, tmp_path: Path) -> None:
        src = tmp_path / "payload"
        src.write_bytes(os.urandom(100_000))
        dest = farm.root / "sftp-upload"
        client = farm.ssh("chianas01")
        try:
            with client.open_sftp() as sftp:
                sftp.put(str(src), str(dest))
                assert sftp.stat(str(dest)).st_size == 100_000
        finally:
            client.close()
        try:
            assert dest.read_bytes() == src.read_bytes()
        finally:
            dest.unlink()

    def test_harvesters_reach_each_other(self, farm: NetnsFarm) -> None:
        one, two = farm.harvesters
        probe = f"import socket; socket.create_connection(({two.address!r}, 22), timeout={DEADLINE}).close(); print('ok')"
        proc = farm.exec_in(one.name, [sys.executable, "-c", probe], check=True)
        assert proc.stdout.strip() == "ok"
        # Real OpenSSH, host key checked, from harvester 1 to harvester 2 (farm reports do this).
        proc = farm.exec_in(
            one.name, ["ssh", "-F", str(farm.ssh_config), two.name, f"echo ${HARVESTER_ENV}"], check=True
        )
        assert proc.stdout.strip() == two.name
        # ... and the same hop started over SSH from the plotter.
        rc, out, err = farm.run(one.name, f"ssh -F {farm.ssh_config} {two.name} 'echo ${HARVESTER_ENV}'")
        assert (rc, out.strip()) == (0, two.name), err
        # The plotter (root namespace) is reachable from a harvester too.
        proc = farm.exec_in(two.name, ["ping", "-c", "1", "-W", "30", BRIDGE_ADDRESS]) if _has("ping") else None
        assert proc is None or proc.returncode == 0, proc.stderr if proc else ""

    def test_mount_made_after_sshd_started_is_visible_over_ssh(self, farm: NetnsFarm, tmp_path: Path) -> None:
        late = farm.root / "late-drive"
        late.mkdir()
        outside = tmp_path / "outside-root"
        outside.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "farmtest", str(late)], check=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "farmtest", str(outside)], check=True)
        try:
            (late / "marker").write_text("hello\n")
            for h in farm.harvesters:
                rc, out, _ = farm.run(h.name, f"findmnt -n -o FSTYPE {late}; cat {late}/marker; cat /proc/mounts")
                assert rc == 0
                lines = out.splitlines()
                assert lines[:2] == ["tmpfs", "hello"]
                assert any(line.split()[1] == str(late) for line in lines[2:])
                # The pitfall the shared bind avoids: outside the farm root, a later mount is
                # invisible to the already running sshd.
                assert not any(line.split()[1] == str(outside) for line in lines[2:])
        finally:
            subprocess.run(["umount", str(late)], check=True)
            subprocess.run(["umount", str(outside)], check=True)
        # Unmounts propagate too: the harvester no longer sees the drive.
        rc, out, _ = farm.run("chianas01", f"findmnt -n {late} || echo gone")
        assert out.strip() == "gone"
        late.rmdir()

    @requires_root_and_loop
    def test_loop_drive_mounted_inside_the_farm_is_seen_by_harvesters(self, farm: NetnsFarm) -> None:
        with LoopDrives(farm.root, ["enclosure0/front/column0/drive0"]) as ld:
            drive = ld.drives[0]
            rc, out, _ = farm.run("chianas02", f"findmnt -n -o SOURCE,FSTYPE {drive.mountpoint}")
            assert rc == 0 and out.split() == [drive.device, "ext4"]
        rc, out, _ = farm.run("chianas02", f"findmnt -n {drive.mountpoint} || echo gone")
        assert out.strip() == "gone"

    def test_link_down_cuts_the_harvester_off_and_link_up_restores_it(self, farm: NetnsFarm) -> None:
        one, two = farm.harvesters
        farm.link_down(one.name)
        try:
            started = time.monotonic()
            assert not port_open(one.address, timeout=2)
            # Given up at its timeout, not at the kernel's own (minutes of SYN retries).
            assert time.monotonic() - started < DEADLINE / 2
            with pytest.raises((OSError, paramiko.SSHException)):
                farm.ssh(one.name, timeout=2)
            assert farm.run(two.name, "true")[0] == 0  # the other harvester is unaffected
        finally:
            farm.link_up(one.name)
        assert port_open(one.address)
        assert farm.run(one.name, "echo back") == (0, "back\n", "")

    def test_stop_sshd_refuses_connections_and_start_sshd_brings_it_back(self, farm: NetnsFarm) -> None:
        one = farm.host("chianas01")
        old_pid = farm.sshd_pid(one.name)
        assert old_pid is not None
        farm.stop_sshd(one.name)
        try:
            assert farm.sshd_pid(one.name) is None
            assert not process_alive(old_pid)
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection((one.address, 22), timeout=2).close()
        finally:
            farm.start_sshd(one.name)
        new_pid = farm.sshd_pid(one.name)
        assert new_pid is not None and new_pid != old_pid
        assert farm.run(one.name, "echo up") == (0, "up\n", "")


# --- farms of their own: cleanup ---------------------------------------------------------


def test_everything_is_removed_after_exit(tmp_path: Path) -> None:
    root = tmp_path / "farm"
    root.mkdir()
    started = time.monotonic()
    with NetnsFarm(root, NAMES) as farm:
        up = time.monotonic() - started
        # Leave some of everything behind for cleanup: a background process started in a
        # namespace, an SSH session still running a command, a connected client.
        background = farm.popen_in("chianas01", ["sleep", "600"])
        session = farm.ssh("chianas02")
        session.exec_command("sleep 600")
        session_pids = wait_until("the SSH session's sleep", lambda: _session_pids(farm, "chianas02"))
        footprint = Footprint(farm, extra_pids=[background.pid, *session_pids])
        started = time.monotonic()
    down = time.monotonic() - started
    footprint.assert_gone()
    assert background.poll() is not None
    print(f"farm of {len(NAMES)} up in {up:.2f}s, down in {down:.2f}s")
    # Not timed: "up" includes waiting for the farm lock while other test runs hold it.  Going
    # down waits for nothing but the farm's own processes: it never waits out a deadline.
    assert down < DEADLINE


def _session_pids(farm: NetnsFarm, name: str) -> list[int]:
    from tests.support.netns_farm import pids_in_netns

    pids = []
    for pid in pids_in_netns(farm.host(name).namespace):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "sleep":
                pids.append(pid)
        except FileNotFoundError:
            pass
    return pids


def test_everything_is_removed_when_the_body_raises(tmp_path: Path) -> None:
    root = tmp_path / "farm"
    root.mkdir()
    footprint: Footprint | None = None
    with pytest.raises(ZeroDivisionError), NetnsFarm(root, NAMES) as farm:
        footprint = Footprint(farm)
        assert farm.run("chianas01", "true")[0] == 0
        1 / 0  # noqa: B018
    assert footprint is not None
    footprint.assert_gone()


def test_setup_failing_half_way_removes_what_was_made(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "farm"
    root.mkdir()
    farm = NetnsFarm(root, NAMES)
    real_wait = NetnsFarm._wait_sshd
    calls = []

    def wait_then_fail(self: NetnsFarm, slot, deadline: float) -> None:  # type: ignore[no-untyped-def]
        real_wait(self, slot, deadline)
        calls.append(slot.host.name)
        if len(calls) == 2:
            # Everything exists now: both namespaces, veths, the bridge, both sshd.
            self.footprint = Footprint(self)  # type: ignore[attr-defined]
            raise RuntimeError("injected failure after the last sshd came up")

    monkeypatch.setattr(NetnsFarm, "_wait_sshd", wait_then_fail)
    with pytest.raises(RuntimeError, match="injected"), farm:
        pytest.fail("the body must not run")
    farm.footprint.assert_gone()  # type: ignore[attr-defined]


def test_sshd_that_cannot_start_fails_clearly_and_cleans_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "farm"
    root.mkdir()
    original = NetnsFarm._sshd_config_text

    def broken(self: NetnsFarm, *args: object) -> str:
        return original(self, *args) + "ThisIsNotAnSshdOption yes\n"  # type: ignore[arg-type]

    monkeypatch.setattr(NetnsFarm, "_sshd_config_text", broken)
    farm = NetnsFarm(root, NAMES)
    with pytest.raises(FarmError, match="ThisIsNotAnSshdOption"), farm:
        pass
    assert not {h.namespace for h in farm.harvesters} & netns_names()
    assert farm.bridge not in link_names()
    assert mountpoints_at_or_under(farm.root) == []
    assert lock_is_free() and not bridge_address_present()


def test_refuses_to_start_with_drives_already_mounted_under_root(tmp_path: Path) -> None:
    root = tmp_path / "farm"
    early = root / "early"
    early.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "farmtest", str(early)], check=True)
    try:
        farm = NetnsFarm(root, NAMES)
        with pytest.raises(FarmError, match="enter NetnsFarm before mounting"), farm:
            pass
        assert not farm.state_dir.exists()
        assert mountpoints_at_or_under(root) == [str(early)]
    finally:
        subprocess.run(["umount", str(early)], check=True)


def test_second_farm_waits_for_the_first(tmp_path: Path) -> None:
    """Two farms in parallel serialise on the lock: the second times out or waits its turn."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "c").mkdir()
    with NetnsFarm(tmp_path / "a", ["chianas01"]) as first:
        impatient = NetnsFarm(tmp_path / "b", ["chianas01"], lock_timeout=0.5)
        errors: list[BaseException] = []

        def enter_impatient() -> None:
            try:
                with impatient:
                    pass
            except BaseException as exc:
                errors.append(exc)

        waiter = threading.Thread(target=enter_impatient)
        waiter.start()
        waiter.join(DEADLINE)
        assert len(errors) == 1 and isinstance(errors[0], FarmError)
        assert "another test farm holds" in str(errors[0]) and first.suffix in str(errors[0])
        assert not impatient.state_dir.exists()

        result: dict[str, object] = {}

        def second_farm() -> None:
            try:
                with NetnsFarm(tmp_path / "c", ["chianas01"], lock_timeout=2 * DEADLINE) as second:
                    result["waited"] = time.monotonic() - released_at[0]
                    result["run"] = second.run("chianas01", "echo second")
            except BaseException as exc:  # pragma: no cover - reported below
                result["error"] = exc

        released_at = [float("inf")]
        thread = threading.Thread(target=second_farm)
        thread.start()
        wait_until("the second farm's keys (written before it takes the lock)",
                   lambda: list((tmp_path / "c").glob(".netns-farm-*")))
        assert "run" not in result and "error" not in result
        assert first.run("chianas01", "echo first") == (0, "first\n", "")
        released_at[0] = time.monotonic()
    thread.join(3 * DEADLINE)
    assert not thread.is_alive()
    assert "error" not in result, result.get("error")
    assert result["run"] == (0, "second\n", "")
    assert float(result["waited"]) >= 0  # type: ignore[arg-type]
    assert lock_is_free() and not bridge_address_present()


def test_second_farm_in_the_same_thread_fails_at_once(tmp_path: Path) -> None:
    """Waiting for the lock our own thread holds could only time out: say so immediately."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with NetnsFarm(tmp_path / "a", ["chianas01"]):
        nested = NetnsFarm(tmp_path / "b", ["chianas01"], lock_timeout=4 * DEADLINE)
        started = time.monotonic()
        with pytest.raises(FarmError, match="already runs the netns farm"), nested:
            pass
        assert time.monotonic() - started < DEADLINE  # at once, not after its lock_timeout
        assert not nested.state_dir.exists()
    assert lock_is_free()
