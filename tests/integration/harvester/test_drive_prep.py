"""prepare_drive on real, freshly made loop devices: a blank disk becomes a mounted plot drive.

Every test makes its own sparse image and ``losetup -f --show`` device, and acts only on that
device, a temp layout root, a temp fstab and a temp chia config.  Cleanup (umount, drop the
partitions, ``losetup -d``, delete the image) runs in a finalizer even when a test fails.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.drive_prep_samples import CHIA_CONFIG, FSTAB_BEFORE, drive_prep_files
from tests.support.loopdrives import mounts, requires_root_and_loop, requires_xfs, umount
from utilities.errors import DriveError
from utilities.harvester.drive_prep import PreparedDrive, prepare_drive
from utilities.harvester.drive_registration import add_plot_directory

requires_parted = pytest.mark.skipif(
    shutil.which("parted") is None or shutil.which("partx") is None or shutil.which("wipefs") is None,
    reason="parted/partx/wipefs missing (scripts/bootstrap.sh dev installs parted)",
)


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=check)


def _digest(device: str) -> str:
    """Hash of the first and last MiB of the device: where tables and signatures live."""
    h = hashlib.sha256()
    with open(device, "rb") as f:
        h.update(f.read(1 << 20))
        f.seek(-(1 << 20), os.SEEK_END)
        h.update(f.read())
    return h.hexdigest()


def _sources_of(device: str) -> set[str]:
    name = Path(device).name
    parts = {f"/dev/{p.name}" for p in Path("/sys/class/block", name).iterdir() if (p / "partition").is_file()}
    return {device} | parts


@pytest.fixture
def loop_device(tmp_path: Path) -> Iterator[Callable[[int], str]]:
    """Factory: ``make(size_mb)`` -> a fresh, unpartitioned ``/dev/loopN`` on a sparse image."""
    made: list[tuple[str, Path]] = []

    def make(size_mb: int = 64) -> str:
        image = tmp_path / f"disk{len(made)}.img"
        with open(image, "wb") as f:
            f.truncate(size_mb << 20)
        device = _run("losetup", "-f", "--show", str(image)).stdout.strip()
        made.append((device, image))
        return device

    try:
        yield make
    finally:
        errors = []
        for device, image in reversed(made):
            try:
                ours = _sources_of(device)
                for src, mp, _ in mounts():
                    if src in ours:
                        umount(Path(mp), device)
                # Drop the partitions while attached; otherwise loopNp1 lingers after detach.
                _run("partx", "-d", device, check=False)
                _run("losetup", "-d", device, check=False)
            except Exception as exc:  # keep cleaning the others
                errors.append(f"{device}: {exc}")
            image.unlink(missing_ok=True)
        assert not errors, errors


@pytest.fixture
def env(tmp_path: Path) -> dict[str, Path]:
    return drive_prep_files(tmp_path)


def _yes(_prompt: str) -> bool:
    return True


def _check_prepared(result: PreparedDrive, device: str, fstype: str, env: dict[str, Path]) -> None:
    assert result.device == device
    assert result.mountpoint == env["layout"].resolve() / "drive4"
    assert (result.partition, str(result.mountpoint), fstype) in mounts()
    blkid_uuid = _run("blkid", "-p", "-s", "UUID", "-o", "value", result.partition).stdout.strip()
    assert result.uuid == blkid_uuid
    fstab_text = env["fstab"].read_text()
    assert fstab_text == FSTAB_BEFORE + f"UUID={blkid_uuid} {result.mountpoint} {fstype} defaults,nofail 0 0\n"
    assert oct(env["fstab"].stat().st_mode & 0o777) == oct(0o640)
    # chia config: exactly one plot directory more, everything else identical.
    before = yaml.safe_load(CHIA_CONFIG)
    after = yaml.safe_load(env["config"].read_text())
    before["harvester"]["plot_directories"].append(str(result.mountpoint))
    assert after == before
    new_text = env["config"].read_text()
    assert new_text.replace(f"  - {result.mountpoint}\n", "", 1) == CHIA_CONFIG
    assert "&id001" in new_text and new_text.count("*id001") == 2


pytestmark = [pytest.mark.root, requires_root_and_loop, requires_parted]


@pytest.mark.parametrize(
    ("fstype", "size_mb"),
    [("ext4", 64), pytest.param("xfs", 320, marks=requires_xfs)],
)
def test_blank_device_becomes_mounted_drive_and_second_run_is_refused(
    loop_device: Callable[[int], str], env: dict[str, Path], fstype: str, size_mb: int
) -> None:
    device = loop_device(size_mb)
    prompts: list[str] = []

    def confirm(prompt: str) -> bool:
        prompts.append(prompt)
        return True

    result = prepare_drive(
        device,
        layout_root=env["layout"],
        fstype=fstype,
        fstab=env["fstab"],
        chia_config=env["config"],
        confirm=confirm,
    )
    assert len(prompts) == 1 and f"ERASE {device}" in prompts[0] and "MiB" in prompts[0]
    _check_prepared(result, device, fstype, env)

    # Second run on the now partitioned (and mounted) device: refused, nothing changes.
    fstab_before, config_before = env["fstab"].read_bytes(), env["config"].read_bytes()
    with pytest.raises(DriveError, match=f"{device}: refusing"):
        prepare_drive(device, layout_root=env["layout"], fstype=fstype, fstab=env["fstab"], confirm=_yes)
    umount(result.mountpoint, device)
    with pytest.raises(DriveError, match=f"{device}: refusing: it already has partitions"):
        prepare_drive(device, layout_root=env["layout"], fstype=fstype, fstab=env["fstab"], confirm=_yes)
    assert env["fstab"].read_bytes() == fstab_before
    assert not (env["layout"] / "drive5").exists()

    # Adding the plot directory again is a no-op.
    assert add_plot_directory(env["config"], result.mountpoint) is False
    assert env["config"].read_bytes() == config_before


def _assert_refused(device: str, env: dict[str, Path], match: str, **kwargs) -> None:
    fstab_before, config_before, digest_before = env["fstab"].read_bytes(), env["config"].read_bytes(), _digest(device)
    asked: list[str] = []
    kwargs.setdefault("confirm", lambda p: asked.append(p) or True)
    with pytest.raises(DriveError, match=match) as info:
        prepare_drive(
            device, layout_root=env["layout"], fstype="ext4", fstab=env["fstab"], chia_config=env["config"], **kwargs
        )
    assert "\n" not in str(info.value) and device in str(info.value)
    assert env["fstab"].read_bytes() == fstab_before
    assert env["config"].read_bytes() == config_before
    assert _digest(device) == digest_before
    assert not (env["layout"] / "drive4").exists()
    assert not asked, "confirm must not be asked for a device that is refused anyway"


def test_device_with_filesystem_is_refused(loop_device: Callable[[int], str], env: dict[str, Path]) -> None:
    device = loop_device(64)
    _run("mkfs.ext4", "-q", "-F", device)
    _assert_refused(device, env, f"{device}: refusing: it has signatures")


def test_mounted_device_is_refused(loop_device: Callable[[int], str], env: dict[str, Path], tmp_path: Path) -> None:
    device = loop_device(64)
    _run("mkfs.ext4", "-q", "-F", device)
    where = tmp_path / "elsewhere"
    where.mkdir()
    _run("mount", device, str(where))
    try:
        _assert_refused(device, env, f"{device}: refusing: {device} is mounted at {where}")
    finally:
        umount(where, device)


def test_protected_device_is_refused(loop_device: Callable[[int], str], env: dict[str, Path], tmp_path: Path) -> None:
    device = loop_device(64)
    alias = tmp_path / "alias"
    alias.symlink_to(device)
    _assert_refused(device, env, f"{device}: refusing: it is in the protected list", protected=[str(alias)])


def test_busy_device_is_refused(loop_device: Callable[[int], str], env: dict[str, Path]) -> None:
    device = loop_device(64)
    fd = os.open(device, os.O_RDONLY | os.O_EXCL)
    try:
        _assert_refused(device, env, f"{device}: refusing: it is in use")
    finally:
        os.close(fd)


def test_no_from_confirm_changes_nothing(loop_device: Callable[[int], str], env: dict[str, Path]) -> None:
    device = loop_device(64)
    fstab_before, config_before, digest_before = env["fstab"].read_bytes(), env["config"].read_bytes(), _digest(device)
    with pytest.raises(DriveError, match=f"{device}: not confirmed"):
        prepare_drive(
            device,
            layout_root=env["layout"],
            fstype="ext4",
            fstab=env["fstab"],
            chia_config=env["config"],
            confirm=lambda _p: False,
        )
    assert env["fstab"].read_bytes() == fstab_before
    assert env["config"].read_bytes() == config_before
    assert _digest(device) == digest_before
    assert not (env["layout"] / "drive4").exists()
    assert _run("wipefs", "--no-act", "--noheadings", device).stdout == ""


def test_unexpected_chia_config_is_refused_before_erasing(
    loop_device: Callable[[int], str], env: dict[str, Path]
) -> None:
    device = loop_device(64)
    env["config"].write_text(
        CHIA_CONFIG.replace("  plot_directories:\n  - /mnt", "  plot_directories: [/mnt")
        .replace("  # old drive kept for reference\n  - /mnt/enclosure0/front/column0/drive1\n", "")
        .replace("drive0\n  port", "drive0]\n  port")
    )
    assert yaml.safe_load(env["config"].read_text())["harvester"]["plot_directories"]
    _assert_refused(device, env, "by hand")


def test_not_a_block_device_is_refused(tmp_path: Path, env: dict[str, Path]) -> None:
    plain = tmp_path / "plain.img"
    plain.write_bytes(b"\0" * 4096)
    with pytest.raises(DriveError, match=f"{plain}: refusing: not a block device"):
        prepare_drive(str(plain), layout_root=env["layout"], fstype="ext4", fstab=env["fstab"], confirm=_yes)


def test_drive_manager_prepares_a_new_disk_and_the_next_cron_run_receives_on_it(
    loop_device: Callable[[int], str], tmp_path: Path
) -> None:
    """The whole farmer's path: --prepare-drive, then the minute job picks the new drive."""
    from tests.support.harvester_env import Harvester, harvester_config
    from tests.support.plotmaker import cached_plot

    device = loop_device(64)
    root = tmp_path / "farm"
    (root / "enclosure0").mkdir(parents=True)
    fstab = tmp_path / "fstab"
    fstab.write_text(FSTAB_BEFORE)
    harvester = Harvester(root)
    config = harvester_config(root, [str(root / "enclosure0" / "drive*")], cached_plot("pool").stat().st_size)
    config["harvester"]["drive_prep"] = {"layout_root": str(root / "enclosure0"), "fstype": "ext4", "fstab": str(fstab)}
    harvester.write_config(config)
    refused = harvester.run("--prepare-drive", device, check=False)  # no terminal, no --yes
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert fstab.read_text() == FSTAB_BEFORE
    mountpoint = root / "enclosure0" / "drive1"
    try:
        out = harvester.run("--prepare-drive", device, "--yes").stdout
        assert f"mounted at {mountpoint}" in out
        assert f" {mountpoint} ext4 " in fstab.read_text()
        harvester.run()
        assert harvester.receive_dir() == str(mountpoint)
    finally:
        for _src, mp, _ in mounts():
            if mp == str(mountpoint):
                umount(Path(mp), device)
