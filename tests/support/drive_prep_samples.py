"""A system fstab and a chia config excerpt as drive preparation finds them (comments, an anchor
and its aliases, a block-style plot_directories list): shared by the unit tests of the edits and
the integration tests of ``prepare_drive``."""

from __future__ import annotations

from pathlib import Path

FSTAB_BEFORE = (
    "# /etc/fstab: static file system information.\n"
    "UUID=11111111-2222-3333-4444-555555555555 / ext4 errors=remount-ro 0 1\n"
    "tmpfs /tmp tmpfs defaults 0 0\n"
)

CHIA_CONFIG = """\
# chia config excerpt
daemon_port: 55400
logging: &id001
  log_filename: log/debug.log
  log_level: WARNING  # keep it quiet
  log_stdout: false
harvester:
  chia_ssl_ca:
    crt: config/ssl/ca/chia_ca.crt
    key: config/ssl/ca/chia_ca.key
  logging: *id001
  num_threads: 30
  parallel_read: true
  plot_directories:
  - /mnt/enclosure0/front/column0/drive0
  # old drive kept for reference
  - /mnt/enclosure0/front/column0/drive1
  port: 8448
  recursive_plot_scan: false
farmer:
  logging: *id001
  port: 8447
"""


def drive_prep_files(tmp_path: Path) -> dict[str, Path]:
    """A mount layout with drive1 and drive3 taken (and a non-drive folder), the fstab (0640) and
    chia's config above, under ``tmp_path``."""
    layout = tmp_path / "mnt"
    (layout / "drive1").mkdir(parents=True)
    (layout / "drive3").mkdir()
    (layout / "notadrive7").mkdir()
    fstab = tmp_path / "fstab"
    fstab.write_text(FSTAB_BEFORE)
    fstab.chmod(0o640)
    config = tmp_path / "config.yaml"
    config.write_text(CHIA_CONFIG)
    return {"layout": layout, "fstab": fstab, "config": config}
