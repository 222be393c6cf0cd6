"""The test plotter behaves like the real programs: command lines, real plots, log lines, files.

Every shape runs once for real (chiapos k=18, about two seconds each; they run concurrently).
The plot must be one our own header parser accepts with the right kind (pool contract -> pool,
pool key -> OG), and the program's output must parse into a completed job whose final path
is the plot.  Gates hold a job in a chosen phase, SIGTERM leaves the temporary files like a
real plotter, and an injected failure reads as aborted.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.fake_plotter import encode_puzzle_hash, fail, held_at, install_fake_plotters, release
from tests.support.waiting import DEADLINE, wait_until
from utilities.plots import KIND_OG, KIND_POOL, is_finished_plot_name, plot_size_fits, read_plot_header
from utilities.plotter.jobs.progress import detect_program, is_final_phase, parse_progress

FARMER_KEY = "a1" * 48
POOL_KEY = "b2" * 48
CONTRACT = encode_puzzle_hash(bytes(range(32)))


@dataclass(frozen=True)
class Shape:
    name: str
    program: str  # dialect expected from detect_program
    kind: str
    argv: tuple[str, ...]  # {tmp}, {tmp2}, {dest} are filled in


SHAPES = (
    Shape(
        "chia-plots-create",
        "chia",
        KIND_POOL,
        (
            "chia",
            "plots",
            "create",
            "-k",
            "18",
            "--override-k",
            "-n",
            "1",
            "-t",
            "{tmp}",
            "-2",
            "{tmp2}",
            "-d",
            "{dest}",
            "-r",
            "2",
            "-b",
            "3390",
            "-u",
            "128",
            "-f",
            FARMER_KEY,
            "-c",
            CONTRACT,
            "-x",
        ),
    ),
    Shape(
        "madmax",
        "madmax",
        KIND_OG,
        (
            "chia_plot",
            "-n",
            "1",
            "-r",
            "2",
            "-u",
            "256",
            "-t",
            "{tmp}/",
            "-2",
            "{tmp2}/",
            "-d",
            "{dest}/",
            "-f",
            FARMER_KEY,
            "-p",
            POOL_KEY,
            "-k",
            "18",
        ),
    ),
    Shape(
        "bladebit-cuda",
        "bladebit",
        KIND_POOL,
        ("bladebit_cuda", "-f", FARMER_KEY, "-c", CONTRACT, "--compress", "7", "cudaplot", "{dest}"),
    ),
    Shape(
        "chia-plotters-bladebit-ramplot",
        "bladebit",
        KIND_OG,
        ("chia", "plotters", "bladebit", "ramplot", "-d", "{dest}", "-f", FARMER_KEY, "-p", POOL_KEY, "-r", "2"),
    ),
    Shape(
        "bladebit-diskplot",
        "bladebit",
        KIND_POOL,
        ("bladebit", "-f", FARMER_KEY, "-c", CONTRACT, "diskplot", "-t1", "{tmp}", "-t2", "{tmp2}", "{dest}"),
    ),
)


@dataclass
class Run:
    shape: Shape
    tmp: Path
    tmp2: Path
    dest: Path
    returncode: int
    stdout: str
    stderr: str


def _dirs(root: Path) -> tuple[Path, Path, Path]:
    dirs = (root / "tmp", root / "tmp2", root / "dest")
    for d in dirs:
        d.mkdir(parents=True)
    return dirs


def _env(bin_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAKE_PLOTTER_")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def _argv(shape: Shape, tmp: Path, tmp2: Path, dest: Path) -> list[str]:
    return [a.format(tmp=tmp, tmp2=tmp2, dest=dest) for a in shape.argv]


def _start(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _stop(proc: subprocess.Popen[str]) -> None:
    """Only ever the process this test started, by its own handle."""
    if proc.poll() is None:
        proc.kill()
    proc.communicate(timeout=DEADLINE)


@pytest.fixture(scope="module")
def bin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fakebin")
    install_fake_plotters(path)
    return path


@pytest.fixture(scope="module")
def runs(bin_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    """Every shape run once, concurrently, to completion."""
    started = []
    try:
        for shape in SHAPES:
            tmp, tmp2, dest = _dirs(tmp_path_factory.mktemp(shape.name))
            proc = _start(_argv(shape, tmp, tmp2, dest), _env(bin_dir), tmp.parent)
            started.append((shape, tmp, tmp2, dest, proc))
        results = {}
        for shape, tmp, tmp2, dest, proc in started:
            out, err = proc.communicate(timeout=DEADLINE)
            results[shape.name] = Run(shape, tmp, tmp2, dest, proc.returncode, out, err)
        return results
    finally:
        for *_, proc in started:
            _stop(proc)


@pytest.mark.parametrize("shape", SHAPES, ids=[s.name for s in SHAPES])
def test_each_shape_makes_a_valid_plot_and_parsable_log(runs: dict[str, Run], shape: Shape) -> None:
    run = runs[shape.name]
    assert run.returncode == 0, run.stderr
    plots = [p for p in run.dest.iterdir() if is_finished_plot_name(p.name)]
    assert len(plots) == 1, sorted(p.name for p in run.dest.iterdir())
    plot = plots[0]
    header = read_plot_header(plot)
    assert header.k == 18
    assert header.kind == shape.kind
    assert plot_size_fits(plot.stat().st_size, 18)
    assert header.plot_id in plot.name
    # Nothing temporary left anywhere once the plotter finished.
    leftovers = [p.name for d in (run.tmp, run.tmp2, run.dest) for p in d.iterdir() if p != plot]
    assert leftovers == []

    lines = run.stdout.splitlines()
    assert detect_program(lines) == shape.program
    progress = parse_progress(shape.program, lines)
    assert progress.state == "completed"
    assert progress.phase == 4 and is_final_phase(progress)
    assert progress.plot_id == header.plot_id
    assert progress.plot_name == plot.name
    assert progress.final_path is not None
    assert (run.tmp.parent / progress.final_path).resolve() == plot.resolve()
    assert progress.total_seconds is not None and progress.total_seconds > 0
    assert len(progress.phase_seconds) >= 3


def test_compressed_bladebit_plot_is_named_like_bladebit(runs: dict[str, Run]) -> None:
    run = runs["bladebit-cuda"]
    (plot,) = [p for p in run.dest.iterdir() if p.suffix == ".plot"]
    assert plot.name.startswith("plot-k18-c07-")


def test_gate_holds_a_job_and_sigterm_leaves_its_temp_files(bin_dir: Path, tmp_path: Path) -> None:
    tmp, tmp2, dest = _dirs(tmp_path / "job")
    gates = tmp_path / "gates"
    gates.mkdir()
    shape = SHAPES[0]  # chia plots create
    log_path = tmp_path / "job.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            _argv(shape, tmp, tmp2, dest),
            env=_env(bin_dir, FAKE_PLOTTER_GATE_DIR=str(gates)),
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until("the job to wait at phase 1", lambda: held_at(gates, 1))
        ((plot_id, pid),) = held_at(gates, 1).items()
        assert pid == proc.pid
        marker = gates / f"{plot_id}.waiting_phase1"
        held = parse_progress("chia", log_path.read_text().splitlines())
        assert held.phase is None and held.state == "starting" and held.plot_id == plot_id
        assert held.temp_dirs == (str(tmp), str(tmp2))

        release(gates, 2, key=plot_id)  # run phases 1 and 2, hold before 3
        wait_until("the job to wait at phase 3", lambda: plot_id in held_at(gates, 3))
        assert not marker.exists()
        held = parse_progress("chia", log_path.read_text().splitlines())
        assert (held.phase, held.subphase, held.state) == (2, "2.6", "running")
        assert not is_final_phase(held)
        temp_files = sorted(p.name for p in [*tmp.iterdir(), *tmp2.iterdir()])
        assert any(name.endswith(".plot.2.tmp") for name in temp_files)
        assert any(".table1.tmp" in name for name in temp_files)
        assert all(plot_id in name for name in temp_files)

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=DEADLINE) == -signal.SIGTERM
        assert sorted(p.name for p in [*tmp.iterdir(), *tmp2.iterdir()]) == temp_files
        assert list(dest.iterdir()) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=DEADLINE)


def test_injected_failure_exits_nonzero_reads_aborted_and_leaves_temp_files(bin_dir: Path, tmp_path: Path) -> None:
    tmp, tmp2, dest = _dirs(tmp_path / "job")
    proc = _start(_argv(SHAPES[1], tmp, tmp2, dest), _env(bin_dir, FAKE_PLOTTER_FAIL_AT="phase3"), tmp_path)
    try:
        out, _ = proc.communicate(timeout=DEADLINE)
    finally:
        _stop(proc)
    assert proc.returncode == 1
    progress = parse_progress("madmax", out.splitlines())
    assert progress.state == "aborted"
    assert progress.phase_seconds and len(progress.phase_seconds) == 2
    assert list(tmp.iterdir()) and list(tmp2.iterdir())
    assert list(dest.iterdir()) == []


def test_destination_on_another_filesystem_is_copied_then_renamed(bin_dir: Path, tmp_path: Path) -> None:
    if not Path("/dev/shm").is_dir() or os.stat("/dev/shm").st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm as a second filesystem")
    tmp, tmp2, _ = _dirs(tmp_path / "job")
    dest = Path(tempfile.mkdtemp(prefix="fake-plotter-dest-", dir="/dev/shm"))
    try:
        proc = _start(_argv(SHAPES[0], tmp, tmp2, dest), _env(bin_dir), tmp_path)
        try:
            out, err = proc.communicate(timeout=DEADLINE)
        finally:
            _stop(proc)
        assert proc.returncode == 0, err
        assert "Copied final file from" in out
        progress = parse_progress("chia", out.splitlines())
        assert progress.state == "completed"
        assert progress.final_path is not None and Path(progress.final_path).parent == dest
        assert read_plot_header(progress.final_path).kind == KIND_POOL
        assert list(tmp2.iterdir()) == []
    finally:
        shutil.rmtree(dest, ignore_errors=True)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["chia", "plots", "create", "-k", "18", "-d", "."], "--override-k"),
        (["chia_plot", "-k", "18", "--bogus"], "unknown option '--bogus'"),
        (["bladebit_cuda", "-f", FARMER_KEY, "ramplot", "."], "cudaplot"),
        (["chia_plot", "-k", "32"], "k 18..24"),
        (["chia_plot", "-k", "18", "-p", POOL_KEY, "-c", CONTRACT], "only one"),
        (["chia_plot", "-k", "18", "-t", "/tmp", "-f", FARMER_KEY, "-p", POOL_KEY], "needs trailing '/'"),
        (["bladebit_cuda", "-c", CONTRACT, "cudaplot", "--disk-128", "-t1", "/tmp", "/tmp"], "uncompressed"),
    ],
)
def test_bad_command_lines_are_refused_like_the_real_programs(
    bin_dir: Path, tmp_path: Path, argv: list[str], message: str
) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    result = subprocess.run(argv, env=_env(bin_dir), cwd=cwd, capture_output=True, text=True, timeout=DEADLINE)
    assert result.returncode == 2
    assert message in result.stderr
    assert list(cwd.iterdir()) == []


def test_install_writes_executables_that_quote_their_paths(tmp_path: Path) -> None:
    odd = tmp_path / "dir with space"
    made = install_fake_plotters(odd)
    assert set(made) == {"chia", "chia_plot", "bladebit", "bladebit_cuda"}
    for path in made.values():
        assert os.access(path, os.X_OK)
    result = subprocess.run(
        [str(made["chia_plot"]), "--nope"], capture_output=True, text=True, timeout=DEADLINE
    )
    assert result.returncode == 2 and "unknown option" in result.stderr


def test_madmax_with_several_plots_finishes_the_current_one_on_sigterm(bin_dir: Path, tmp_path: Path) -> None:
    tmp, tmp2, dest = _dirs(tmp_path / "job")
    gates = tmp_path / "gates"
    gates.mkdir()
    argv = _argv(SHAPES[1], tmp, tmp2, dest)
    argv[argv.index("-n") + 1] = "3"
    (gates / "all.phase1").touch()
    proc = _start(argv, _env(bin_dir, FAKE_PLOTTER_GATE_DIR=str(gates)), tmp_path)
    try:
        wait_until("the first plot to wait at phase 2", lambda: list(gates.glob("*.waiting_phase2")))
        proc.send_signal(signal.SIGTERM)  # once: finish this plot, start no other
        (gates / "all.phase4").touch()
        out, _ = proc.communicate(timeout=DEADLINE)
    finally:
        _stop(proc)
    assert proc.returncode == 0
    assert "The crafting of plots will stop after the creation and copy of the current plot" in out
    assert out.count("Crafting plot") == 1
    plots = [p for p in dest.iterdir() if is_finished_plot_name(p.name)]
    assert len(plots) == 1
    assert parse_progress("madmax", out.splitlines()).state == "completed"


def test_one_held_job_can_be_made_to_crash_by_its_plot_id(bin_dir: Path, tmp_path: Path) -> None:
    gates = tmp_path / "gates"
    gates.mkdir()
    procs = []
    try:
        for name in ("a", "b"):
            tmp, tmp2, dest = _dirs(tmp_path / name)
            procs.append(
                _start(_argv(SHAPES[0], tmp, tmp2, dest), _env(bin_dir, FAKE_PLOTTER_GATE_DIR=str(gates)), tmp_path)
            )
        wait_until("both jobs to wait at phase 1", lambda: len(held_at(gates, 1)) == 2)
        by_pid = {pid: plot_id for plot_id, pid in held_at(gates, 1).items()}
        doomed, spared = procs[0], procs[1]
        fail(gates, 1, key=by_pid[doomed.pid])
        release(gates, 4)
        doomed_out, _ = doomed.communicate(timeout=DEADLINE)
        spared_out, _ = spared.communicate(timeout=DEADLINE)
    finally:
        for proc in procs:
            _stop(proc)
    assert doomed.returncode == 1 and spared.returncode == 0
    assert parse_progress("chia", doomed_out.splitlines()).state == "aborted"
    assert parse_progress("chia", spared_out.splitlines()).state == "completed"
