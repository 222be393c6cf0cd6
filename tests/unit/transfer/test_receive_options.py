"""receive_plot.py's command line, read strictly: each option once, where plots may land
(``--dest``, or ``--drives`` with ``--claims``), and one plot or a session.

The script puts its own options first and the plotter's words after them, so whatever a
plotter appends must not move where plots land; every refusal is one line naming the problem.
The same refusals from a real process (ERROR line, exit status) are in
tests/integration/transfer/test_receive_session.py.
"""

from __future__ import annotations

import json

import pytest

from receive_plot import parse_args
from utilities.transfer.protocol import ERR_BAD_NAME, ERR_USAGE, ReceiveFailure
from utilities.transfer.receive_set import SetDrive

PLOT = "plot-k32-2026-01-02-03-04-" + "ab" * 32 + ".plot"
DRIVES = json.dumps([{"name": "d0", "dir": "/mnt/d0", "replace": False}, {"name": "d1", "dir": "/mnt/d1", "replace": True}])
SET = ["--config", "/c.yaml", "--drives", DRIVES, "--claims", "/state/receiving"]


def test_dest_and_one_plot_as_before() -> None:
    options = parse_args(["--config", "/c.yaml", "--dest", "/mnt/d0", "--replace-old-plots", "yes",
                          "--idle-timeout", "5", PLOT, "100", "4000"])
    assert options.drives == (SetDrive("/mnt/d0", "/mnt/d0", True),)
    assert (options.plot, options.port, options.idle_timeout) == ((PLOT, 100), 4000, 5.0)
    assert options.claims_dir is None and options.per_drive == 1


def test_a_receive_set_and_a_session() -> None:
    options = parse_args([*SET, "--per-drive", "2", "--allow-from", "10.0.0.7", "--session", "4000"])
    assert options.drives == (SetDrive("d0", "/mnt/d0", False), SetDrive("d1", "/mnt/d1", True))
    assert (options.claims_dir, options.per_drive, options.allow_from) == ("/state/receiving", 2, "10.0.0.7")
    assert options.plot is None and options.port == 4000


def test_a_receive_set_takes_a_single_plot_too() -> None:
    options = parse_args([*SET, "--", PLOT, "100", "4000"])
    assert options.plot == (PLOT, 100) and options.per_drive == 1


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (["--config", "/c", PLOT, "100", "4000"], "--dest or --drives is required"),
        (["--dest", "/mnt/d0", "--drives", DRIVES, "--claims", "/s", PLOT, "1", "4000"], "--drives and --dest"),
        ([*SET, "--dest", "/elsewhere", PLOT, "1", "4000"], "--drives and --dest"),
        ([*SET, "--replace-old-plots", "yes", PLOT, "1", "4000"], "--drives and --replace-old-plots"),
        (["--drives", DRIVES, PLOT, "1", "4000"], "--drives needs --claims DIR"),
        ([*SET, "--drives", DRIVES, PLOT, "1", "4000"], "--drives given twice"),
        (["--dest", "/d", "--claims", "/s", PLOT, "1", "4000"], "--claims goes with --drives"),
        (["--dest", "/d", "--per-drive", "2", PLOT, "1", "4000"], "--per-drive goes with --drives"),
        ([*SET, "--per-drive", "0", PLOT, "1", "4000"], "--per-drive must be 1..8"),
        ([*SET, "--per-drive", "9", PLOT, "1", "4000"], "--per-drive must be 1..8"),
        ([*SET, "--per-drive", "two", PLOT, "1", "4000"], "--per-drive must be 1..8"),
        (["--drives", DRIVES, "--claims", "state", PLOT, "1", "4000"], "--claims must be an absolute path"),
        (["--drives", "[]", "--claims", "/s", PLOT, "1", "4000"], "--drives: not a non-empty JSON list"),
        (["--drives", "/mnt/d0", "--claims", "/s", PLOT, "1", "4000"], "--drives: not JSON"),
        (["--drives", '[{"name": "d0", "dir": "d0", "replace": false}]', "--claims", "/s", "--session", "4000"],
         "dir must be an absolute path"),
        ([*SET, "--session", "4000", PLOT, "1", "4000"], "--session takes no NAME SIZE PORT"),
        ([*SET, "--session", "80"], "PORT must be 1024..65535"),
        ([*SET, "--session", "4000", "--session", "4001"], "--session given twice"),
        ([*SET, "--session"], "--session needs a value"),
        ([*SET, PLOT, "1"], "expected NAME SIZE PORT"),
        ([*SET, f"--dest={'/x'}", "1", "4000"], "bad name"),
    ],
)
def test_bad_command_lines_are_refused_in_one_line(argv: list[str], problem: str) -> None:
    with pytest.raises(ReceiveFailure) as refused:
        parse_args(argv)
    failure = refused.value
    assert failure.kind in (ERR_USAGE, ERR_BAD_NAME) and "\n" not in failure.detail
    assert problem in f"{failure.kind} {failure.detail}", failure.detail
