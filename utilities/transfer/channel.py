"""Starting the receiver and talking to it: the control channel, over SSH or as a local process.

``send_plot`` needs only a started command whose stdin/stdout carry the protocol lines
(``ReceiverProcess``), so the same send runs over an SSH exec channel in production
(``ParamikoExec``, on a client someone else opened and checked the host key of) and as a local
``/bin/sh -c`` process in tests or on a harvester that is also the plotter (``LocalExec``).
``ReplyReader`` reads the receiver's lines on a thread, so every wait for one has a timeout.

paramiko itself is never imported here: ParamikoExec is handed an open client.
"""

from __future__ import annotations

import contextlib
import queue
import subprocess
import tempfile
import threading
from collections.abc import Callable, Mapping
from typing import IO, Any, Protocol

from utilities.transfer.protocol import MAX_LINE, TransferError, as_text


def one_line(data: bytes, limit: int = 2000) -> str:
    """The last ``limit`` bytes of a child's stderr as one line, for a failure reason."""
    return " ".join(data[-limit:].decode("utf-8", "replace").split())


def read_tail(handle: IO[bytes], limit: int = 2000) -> str:
    """``one_line`` of what a child wrote into the temporary file ``handle`` ('' if unreadable)."""
    with contextlib.suppress(OSError, ValueError):
        handle.seek(0)
        return one_line(handle.read(), limit)
    return ""


class ReceiverProcess(Protocol):
    """A started receiver command whose stdin/stdout are the control channel.

    Production: an SSH exec channel (ParamikoExec); tests: a local process (LocalExec).
    """

    stdin: Any  # write(bytes), flush()
    stdout: Any  # readline(limit) -> bytes | str

    def close_stdin(self) -> None:
        """Send EOF: tells the receiver the plotter is gone (it then removes its part file)."""

    def wait(self, timeout: float) -> int | None:
        """Exit status, or None if still running after ``timeout`` seconds."""

    def kill(self) -> None:
        """Stop the command (kill our child / close the SSH channel)."""

    def stderr_text(self) -> str:
        """What the command wrote to stderr so far (for failure reasons)."""


ExecFn = Callable[[str], ReceiverProcess]
"""Starts the receiver command line (build_receive_command's) and hands back its process."""


class LocalProcess:
    """A command run by ``/bin/sh -c`` here, as sshd would run it on the harvester."""

    def __init__(self, command: str, env: Mapping[str, str] | None = None) -> None:
        # Lives as long as this object: stderr for failure reasons, never a pipe that could fill.
        self._errors = tempfile.TemporaryFile()  # noqa: SIM115
        self.proc = subprocess.Popen(
            ["/bin/sh", "-c", command],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._errors,
            env=dict(env) if env is not None else None,
        )
        self.pid = self.proc.pid
        self.stdin = self.proc.stdin
        self.stdout = self.proc.stdout

    def close_stdin(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.stdin.close()  # type: ignore[union-attr]

    def wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        # Closing stdin as well reaches a receiver running under flock, whose pid is not ours.
        self.close_stdin()
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        self.wait(10)

    def stderr_text(self) -> str:
        return read_tail(self._errors)


class LocalExec:
    """ExecFn running the command locally (tests, or a harvester that is also the plotter)."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.env = env
        self.started: list[LocalProcess] = []

    def __call__(self, command: str) -> LocalProcess:
        process = LocalProcess(command, self.env)
        self.started.append(process)
        return process


class ParamikoProcess:
    """A command on an SSH exec channel (paramiko); EOF and exit status come from the channel."""

    def __init__(self, client: Any, command: str, timeout: float | None = None) -> None:
        transport = client.get_transport()
        if transport is None or not transport.is_active():
            raise TransferError("SSH connection is not open")
        self.channel = transport.open_session(timeout=timeout)
        self.channel.exec_command(command)
        self.stdin = self.channel.makefile_stdin("wb")
        self.stdout = self.channel.makefile("rb")

    def close_stdin(self) -> None:
        with contextlib.suppress(OSError, EOFError):
            self.channel.shutdown_write()

    def wait(self, timeout: float) -> int | None:
        if not self.channel.status_event.wait(timeout):
            return None
        return int(self.channel.recv_exit_status())

    def kill(self) -> None:
        self.channel.close()

    def stderr_text(self) -> str:
        chunks = []
        with contextlib.suppress(OSError, EOFError):
            while self.channel.recv_stderr_ready():
                chunks.append(self.channel.recv_stderr(65536))
        return one_line(b"".join(chunks))


class ParamikoExec:
    """ExecFn over an open ``paramiko.SSHClient`` (host keys are checked by whoever opened it)."""

    def __init__(self, client: Any, timeout: float | None = 30.0) -> None:
        self.client = client
        self.timeout = timeout

    def __call__(self, command: str) -> ParamikoProcess:
        return ParamikoProcess(self.client, command, self.timeout)


class ReplyReader:
    """Reads the receiver's stdout on a thread so every wait for a line can have a timeout.

    A blocking ``readline`` cannot time out, and select() on a buffered channel file lies; a
    reader thread works the same for a pipe and a paramiko channel.  Started by send_plot (not
    by a constructor) and ends by itself at EOF, which killing the receiver guarantees.
    """

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._ended = False
        self._thread = threading.Thread(target=self._run, name="receiver-stdout", daemon=True)

    def start(self) -> ReplyReader:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            while True:
                line = self._stream.readline(MAX_LINE)
                if not line:
                    break
                self._lines.put(as_text(line).rstrip("\r\n"))
        except (OSError, ValueError, EOFError):
            pass
        finally:
            self._lines.put(None)

    def next_line(self, timeout: float) -> str | None:
        """The next line; None at (and after) EOF; raises TimeoutError if nothing came in time."""
        if self._ended:
            return None
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError from None
        self._ended = line is None
        return line
