"""Landing a plot on a drive: its part file from creation to its final name, for both writers.

A plot arriving from the network (``receiver.py``) and a plot made on this machine
(``local_copy.py``) are written into the same drive directories, so both land through this one
piece of code, on top of the rules in ``part_files.py``:

1. open the directory once; every later step is relative to that fd;
2. look at the final name: free, or a regular file of exactly this size (maybe this very plot,
   from a run that stopped after its rename: the caller proves it by hash), else refuse;
3. in the directory's turn (its flock): remove stale part files, make room (replace mode),
   check the free space, create and flock ``.NAME.part``, reserve its size with fallocate;
4. the caller writes the bytes (``write`` for the receiver; a local copy's own copier);
5. fsync the part, give it the final name without ever replacing a file, fsync the directory;
6. on any failure before that the part file goes (only while the name is still ours).

Each writer words its failures its own way (the receiver as protocol ERROR kinds, a local copy
as move results), so a failure here is a ``Problem`` that the writer's ``Wording`` turns into
the writer's own exception and message.  Only the standard library and xxhash are imported:
receive_plot.py must start fast.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import fcntl
import os
import stat
from collections.abc import Callable, Mapping
from pathlib import Path

from utilities.transfer import part_files
from utilities.transfer.integrity import hash_fd
from utilities.transfer.journal import Journal, read_journal, remove_journal
from utilities.transfer.part_files import SPACE_MARGIN, StaleCheck, part_name


class Problem(enum.Enum):
    """Every way landing a plot can fail; a writer's Wording says what each means to it."""

    OPEN_DIR = "the directory cannot be opened"
    CHECK_FINAL = "the final name cannot be looked at"
    FINAL_TAKEN = "another file holds the final name"
    OPEN_FINAL = "the file under the final name cannot be opened"
    READ_FINAL = "the file under the final name cannot be read"
    FINAL_DIFFERS = "the file under the final name has other bytes"
    LIST_DIR = "the directory cannot be listed"
    PART_BUSY = "a living writer holds this plot's part file"
    LOST_RACE = "another writer took our brand-new part file for a stale one"
    CREATE_DENIED = "the part file may not be created (permissions, read-only)"
    CREATE_FAILED = "the part file cannot be created"
    NO_ROOM = "the free space is short of the plot"
    RESERVE_NO_SPACE = "fallocate found no room"
    RESERVE_TOO_BIG = "the file system cannot hold a file this big"
    RESERVE_FAILED = "fallocate failed"
    WRITE_NO_SPACE = "a write found no room"
    WRITE_FAILED = "a write failed"
    FLUSH = "fsync of the part file failed"
    CHECK_PART = "the part file cannot be looked at before its rename"
    PART_REPLACED = "the part name holds another file now"
    FINAL_APPEARED = "the final name was taken meanwhile"
    RENAME = "the part file cannot be given its final name"
    FLUSH_DIR = "fsync of the directory failed"


Wording = Mapping[Problem, tuple[str, str]]
"""Problem -> (the writer's outcome, message template).  Templates may use ``{name}``,
``{part}``, ``{dest}``, ``{final}`` (dest/name), ``{size}``, ``{needed}`` (size plus the
margin), ``{reason}`` (the OS's words), ``{free}`` (NO_ROOM) and ``{offset}`` (writes)."""

Fail = Callable[[str, str], BaseException]
"""Builds the writer's exception from (outcome, message)."""


class FinalName(enum.Enum):
    FREE = "free"
    SAME_SIZE = "same size"  # a regular file of the plot's size: the caller proves it by hash


class Landing:
    """One plot landing in one directory (see the module notes); ``close`` always ends it."""

    def __init__(
        self,
        dest: str | Path,
        name: str,
        size: int,
        *,
        wording: Wording,
        fail: Fail,
        on_stale: Callable[[str, StaleCheck], None],
        note: Callable[[str], None],
        keep_seconds: float = part_files.DEFAULT_KEEP_SECONDS,
    ) -> None:
        self.dest = dest
        self.name = name
        self.size = size
        self.part = part_name(name)
        self.wording = wording
        self.fail = fail
        self.on_stale = on_stale  # told of every part file the stale clean-up looked at
        self.note = note  # a problem worth saying that does not stop the landing
        self.keep_seconds = keep_seconds  # another plot's part kept for a resume is left this long
        self.dir_fd: int | None = None
        self.part_fd: int | None = None
        self.part_inode: int | None = None
        self.committed = False
        # A resumable receive that holds durable chunks keeps its part (and journal) on failure.
        self.keep_part = False

    def failure(self, problem: Problem, exc: OSError | None = None, **fields: object) -> BaseException:
        """The writer's exception for ``problem`` (``exc``: the OS error behind it)."""
        outcome, template = self.wording[problem]
        values: dict[str, object] = {
            "name": self.name, "part": self.part, "dest": self.dest, "final": Path(self.dest) / self.name,
            "size": self.size, "needed": self.size + SPACE_MARGIN, "free": "", "offset": "",
            "reason": (exc.strerror or str(exc)) if exc is not None else "",
        }  # fmt: skip
        values.update(fields)
        return self.fail(outcome, template.format(**values))

    # -- before anything is created ---------------------------------------------------------------

    def open(self) -> None:
        """Open the directory once: it stays the same directory even if the path is remounted."""
        try:
            self.dir_fd = part_files.open_directory(self.dest)
        except OSError as exc:
            raise self.failure(Problem.OPEN_DIR, exc) from None

    def final_name(self) -> FinalName:
        """FREE, or SAME_SIZE for a regular file of the plot's size; anything else is refused."""
        try:
            st = os.stat(self.name, dir_fd=self.dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return FinalName.FREE
        except OSError as exc:
            raise self.failure(Problem.CHECK_FINAL, exc) from None
        if stat.S_ISREG(st.st_mode) and st.st_size == self.size:
            return FinalName.SAME_SIZE
        raise self.failure(Problem.FINAL_TAKEN)

    def prove_final(self, size: int, hexdigest: str) -> str:
        """The file under the final name holds exactly ``size`` bytes hashing to ``hexdigest``:
        its digest; else FINAL_DIFFERS.  Nothing is written or deleted here."""
        try:
            fd = os.open(self.name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=self.dir_fd)
        except OSError as exc:
            raise self.failure(Problem.OPEN_FINAL, exc) from None
        try:
            have_size, have = hash_fd(fd)
        except OSError as exc:
            raise self.failure(Problem.READ_FINAL, exc) from None
        finally:
            os.close(fd)
        if (have_size, have) != (size, hexdigest):
            raise self.failure(Problem.FINAL_DIFFERS)
        return have

    # -- the reservation, in the directory's turn -------------------------------------------------

    def reserve(self, make_room: Callable[[], object] | None = None) -> bool:
        """Check for room and take it, as one step per directory; False when the file system
        cannot preallocate (the free-space check is then all there is).

        The directory's flock makes writers into one directory take turns, so two plots that fit
        one at a time never both pass the free-space check, and replace mode (``make_room``)
        never deletes two OG plots for what one would have made room for.
        """
        assert self.dir_fd is not None
        with part_files.directory_turn(self.dir_fd):
            self._remove_stale_parts()
            if make_room is not None:
                make_room()
            self._check_space()
            self._create_part()
            return self._preallocate()

    def _remove_stale_parts(self) -> None:
        """Part files left by dead writers go: each is a preallocated, wasted plot slot."""
        assert self.dir_fd is not None
        try:
            entries = part_files.stale_part_candidates(self.dir_fd)
        except OSError as exc:
            raise self.failure(Problem.LIST_DIR, exc) from None
        for entry in entries:
            # Our own name's part waits for no other resume: this landing starts it afresh.
            keep = 0.0 if entry == self.part else self.keep_seconds
            check = part_files.remove_if_stale(self.dir_fd, entry, keep)
            self.on_stale(entry, check)
            if not check.gone and entry == self.part:
                raise self.failure(Problem.PART_BUSY)

    def resume_existing(self, source: str, chunk: int) -> Journal | None:
        """Take over this plot's kept part, in the directory's turn: its journal when the part is
        nobody's, whole, and of this very plot (name, size, source, chunk size); else None and
        nothing is taken (``reserve`` then removes the part and starts afresh).  PART_BUSY when a
        living writer holds it."""
        assert self.dir_fd is not None
        with part_files.directory_turn(self.dir_fd):
            try:
                fd = os.open(self.part, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.dir_fd)
            except FileNotFoundError:
                return None
            except OSError as exc:
                raise self.failure(Problem.CREATE_FAILED, exc) from None
            try:
                held = os.fstat(fd)
                if not stat.S_ISREG(held.st_mode):
                    raise self.failure(Problem.PART_BUSY)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise self.failure(Problem.PART_BUSY) from None
                journal, _age = read_journal(self.dir_fd, self.part)
                current = os.stat(self.part, dir_fd=self.dir_fd, follow_symlinks=False)
                if (
                    journal is None or not journal.matches(self.name, self.size, source) or journal.chunk != chunk
                    or held.st_size != self.size or current.st_ino != held.st_ino
                ):  # fmt: skip
                    os.close(fd)
                    return None
            except BaseException:
                with contextlib.suppress(OSError):
                    os.close(fd)
                raise
            self.part_fd, self.part_inode = fd, held.st_ino
            return journal

    def _check_space(self) -> None:
        assert self.dir_fd is not None
        free = part_files.free_bytes(self.dir_fd)
        if not part_files.has_room(free, self.size):
            raise self.failure(Problem.NO_ROOM, free=free)

    def _create_part(self) -> None:
        assert self.dir_fd is not None
        try:
            self.part_fd, self.part_inode = part_files.create_part(self.dir_fd, self.part)
        except FileExistsError:
            raise self.failure(Problem.PART_BUSY) from None
        except part_files.LostRace:
            raise self.failure(Problem.LOST_RACE) from None
        except OSError as exc:
            denied = exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS)
            raise self.failure(Problem.CREATE_DENIED if denied else Problem.CREATE_FAILED, exc) from None

    def _preallocate(self) -> bool:
        assert self.part_fd is not None
        try:
            return part_files.preallocate(self.part_fd, self.size)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise self.failure(Problem.RESERVE_NO_SPACE, exc) from None
            if exc.errno == errno.EFBIG:
                raise self.failure(Problem.RESERVE_TOO_BIG, exc) from None
            raise self.failure(Problem.RESERVE_FAILED, exc) from None

    # -- the bytes ----------------------------------------------------------------------------------

    def write(self, data: memoryview, offset: int) -> None:
        """Append ``data`` (which starts at byte ``offset`` of the plot) to the part file."""
        assert self.part_fd is not None
        try:
            while data:
                data = data[os.write(self.part_fd, data) :]
        except OSError as exc:
            problem = Problem.WRITE_NO_SPACE if exc.errno in (errno.ENOSPC, errno.EDQUOT) else Problem.WRITE_FAILED
            raise self.failure(problem, exc, offset=offset) from None

    def hand_over_part_fd(self) -> int:
        """The part file's fd, which the caller closes from now on (a copier thread that may
        outlive a stall); the part file itself is still removed by ``close`` unless committed."""
        assert self.part_fd is not None
        fd, self.part_fd = self.part_fd, None
        return fd

    # -- the end ------------------------------------------------------------------------------------

    def commit(self, *, flush: bool = True) -> None:
        """fsync the part (unless the caller already did: ``flush=False``), give it its final
        name (never over an existing file), fsync the directory."""
        assert self.dir_fd is not None
        if flush:
            assert self.part_fd is not None
            try:
                os.fsync(self.part_fd)
            except OSError as exc:
                raise self.failure(Problem.FLUSH, exc) from None
        try:
            ours = part_files.is_ours(self.dir_fd, self.part, self.part_inode)
        except OSError as exc:
            raise self.failure(Problem.CHECK_PART, exc) from None
        if not ours:
            raise self.failure(Problem.PART_REPLACED)
        try:
            linked = part_files.link_into_place(self.dir_fd, self.part, self.name)
        except FileExistsError:
            raise self.failure(Problem.FINAL_APPEARED) from None
        except OSError as exc:
            raise self.failure(Problem.RENAME, exc) from None
        self.committed = True
        remove_journal(self.dir_fd, self.part)
        if linked:
            try:
                os.unlink(self.part, dir_fd=self.dir_fd)
            except OSError as exc:
                self.note(f"plot is in place but {self.part} stays: {exc.strerror}")
        try:
            os.fsync(self.dir_fd)
        except OSError as exc:
            raise self.failure(Problem.FLUSH_DIR, exc) from None

    def close(self) -> None:
        """Remove our part file unless it became the plot; close what is still open here."""
        if self.part_inode is not None and not self.committed and self.dir_fd is not None and not self.keep_part:
            try:
                part_files.remove_own_part(self.dir_fd, self.part, self.part_inode)
                remove_journal(self.dir_fd, self.part)
            except OSError as exc:
                self.note(f"cannot remove {self.part}: {exc.strerror}")
        if self.part_fd is not None:
            os.close(self.part_fd)
            self.part_fd = None
        if self.dir_fd is not None:
            os.close(self.dir_fd)
            self.dir_fd = None
