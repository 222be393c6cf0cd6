"""Record a new plot drive where the system and chia look for it: the next free ``driveN``
mountpoint, its fstab line (by UUID) and its entry in chia's ``harvester.plot_directories``.

Kept apart from the device work in ``drive_prep.py`` because these are edits of files the farmer
owns: each is planned (and may refuse) before ``prepare_drive`` touches the disk, changes only
the one line it adds (comments, anchors and order stay byte for byte), and is written with
``durable.atomic_write`` keeping the file's mode and owner.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import yaml

from utilities.durable import atomic_write
from utilities.errors import DriveError

_DRIVE_DIR = re.compile(r"^drive(\d+)$")


def unescape_field(field: str) -> str:
    r"""Decode the octal escapes (``\040``...) used in /proc/self/mounts and fstab."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _escape(field: str) -> str:
    """Escape whitespace and backslashes for an fstab field."""
    return "".join(f"\\{ord(c):03o}" if c in " \t\n\\" else c for c in field)


# --- mountpoint & fstab ----------------------------------------------------------------------


def _fstab_entries(fstab: Path) -> list[tuple[str, str]]:
    """``(spec, mountpoint)`` of each non-comment fstab line; missing file = no entries."""
    try:
        text = fstab.read_text(encoding="utf-8", errors="surrogateescape")
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and not fields[0].startswith("#"):
            out.append((unescape_field(fields[0]), unescape_field(fields[1])))
    return out


def next_free_mountpoint(layout_root: Path, fstab: Path | None = None) -> Path:
    """``layout_root/driveN`` with N one above the highest ``drive<digits>`` dir (or fstab entry) there."""
    layout_root = Path(layout_root)
    numbers = [0]
    if layout_root.is_dir():
        numbers += [int(m.group(1)) for p in layout_root.iterdir() if p.is_dir() and (m := _DRIVE_DIR.match(p.name))]
    if fstab is not None:
        for _, mp in _fstab_entries(fstab):
            p = Path(mp)
            if p.parent == layout_root and (m := _DRIVE_DIR.match(p.name)):
                numbers.append(int(m.group(1)))
    return layout_root / f"drive{max(numbers) + 1}"


def add_fstab_entry(fstab: Path, uuid: str, mountpoint: Path, fstype: str) -> bool:
    """Append ``UUID=<uuid> <mountpoint> <fstype> defaults,nofail 0 0`` unless already there.

    Returns True if the file was changed.  An existing line for the same UUID or mountpoint
    means "already done" and nothing is written.
    """
    for spec, mp in _fstab_entries(fstab):
        if spec == f"UUID={uuid}" or os.path.normpath(mp) == os.path.normpath(str(mountpoint)):
            return False
    try:
        data = fstab.read_bytes()
    except FileNotFoundError:
        data = b""
    if data and not data.endswith(b"\n"):
        data += b"\n"
    line = f"UUID={uuid} {_escape(str(mountpoint))} {fstype} defaults,nofail 0 0\n"
    atomic_write(fstab.resolve(), data + line.encode())
    return True


# --- chia config -----------------------------------------------------------------------------

_KEY_LINE = re.compile(r"^(?P<indent>[ ]*)(?P<key>[A-Za-z_][\w-]*):(?P<rest>.*?)(?P<nl>\r?\n)?$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _is_blank_or_comment(line: str) -> bool:
    s = line.strip()
    return not s or s.startswith("#")


def plan_plot_directory_edit(text: str, mountpoint: str) -> str | None:
    """Return ``text`` with ``- mountpoint`` added to ``harvester.plot_directories``, or None if present.

    Only a minimal textual insertion is made (comments, anchors, order stay byte for byte); the
    result is re-parsed and must equal the original with just that item appended, otherwise
    ``DriveError`` is raised and the caller must not write anything.
    """
    how = f"add '- {mountpoint}' under harvester: plot_directories: by hand"
    try:
        before = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DriveError(f"chia config does not parse ({exc}); {how}") from exc
    harvester = before.get("harvester") if isinstance(before, dict) else None
    if not isinstance(harvester, dict) or "plot_directories" not in harvester:
        raise DriveError(f"chia config has no harvester.plot_directories key; {how}")
    current = harvester["plot_directories"]
    if current is None:
        current = []
    if not isinstance(current, list):
        raise DriveError(f"chia config harvester.plot_directories is not a list; {how}")
    if mountpoint in current:
        return None

    lines = text.splitlines(keepends=True)
    # The top-level "harvester:" line (block mapping, nothing after the colon but a comment).
    starts = [i for i, ln in enumerate(lines) if re.match(r"^harvester:[ \t]*(#.*)?\r?\n?$", ln)]
    if len(starts) != 1:
        raise DriveError(f"chia config: cannot find a single block-style 'harvester:' line; {how}")
    h = starts[0]
    end = len(lines)
    for j in range(h + 1, len(lines)):
        if not _is_blank_or_comment(lines[j]) and _indent(lines[j]) == 0:
            end = j
            break
    body = [j for j in range(h + 1, end) if not _is_blank_or_comment(lines[j])]
    if not body:
        raise DriveError(f"chia config: empty harvester section; {how}")
    child_indent = _indent(lines[body[0]])
    keys = []
    for j in body:
        m = _KEY_LINE.match(lines[j])
        if m and m.group("key") == "plot_directories" and len(m.group("indent")) == child_indent:
            keys.append((j, m))
    if len(keys) != 1:
        raise DriveError(f"chia config: cannot find plot_directories directly under harvester; {how}")
    k, m = keys[0]
    nl = m.group("nl") or "\n"
    rest = m.group("rest").strip()
    item = yaml.safe_dump([mountpoint], default_flow_style=False, width=float("inf")).rstrip("\n")
    if "\n" in item:
        raise DriveError(f"chia config: mountpoint {mountpoint!r} needs multi-line YAML; {how}")

    if re.fullmatch(r"\[\s*\](\s+#.*)?", rest):
        # Empty flow list (chia's initial config): turn it into a one-item block list.
        comment = rest[rest.index("]") + 1 :]
        new_lines = (
            lines[:k]
            + [f"{' ' * child_indent}plot_directories:{comment}{nl}", f"{' ' * child_indent}{item}{nl}"]
            + lines[k + 1 :]
        )
    elif rest and not rest.startswith("#"):
        raise DriveError(f"chia config: plot_directories is written in flow style or with an anchor ({rest!r}); {how}")
    else:
        # Block list: items are lines indented >= the key ("- x" at the key's own indent is
        # PyYAML's default).  Insert after the last such non-comment line.
        last = k
        item_indent: int | None = None
        for j in range(k + 1, end):
            ln = lines[j]
            if _is_blank_or_comment(ln):
                continue
            ind = _indent(ln)
            if ind > child_indent or (ind == child_indent and ln.lstrip(" ").startswith("- ")):
                if item_indent is None and ln.lstrip(" ").startswith("-"):
                    item_indent = ind
                last = j
            else:
                break
        if item_indent is None:
            item_indent = child_indent
        if not lines[last].endswith("\n"):
            lines[last] += nl
        new_lines = lines[: last + 1] + [f"{' ' * item_indent}{item}{nl}"] + lines[last + 1 :]

    new_text = "".join(new_lines)
    try:
        after = yaml.safe_load(new_text)
    except yaml.YAMLError as exc:
        raise DriveError(f"chia config: automatic edit would not parse; {how}") from exc
    harvester["plot_directories"] = [*current, mountpoint]  # ``before`` is now what the edit must give
    if after != before:
        raise DriveError(f"chia config: automatic edit changed more than plot_directories; {how}")
    return new_text


def add_plot_directory(chia_config: Path, mountpoint: Path | str) -> bool:
    """Add ``mountpoint`` to chia's ``harvester.plot_directories``; True if the file changed."""
    chia_config = Path(chia_config)
    try:
        raw = chia_config.read_bytes()
    except OSError as exc:
        raise DriveError(f"cannot read chia config {chia_config}: {exc.strerror}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DriveError(f"chia config {chia_config} is not UTF-8") from exc
    new_text = plan_plot_directory_edit(text, str(mountpoint))
    if new_text is None:
        return False
    atomic_write(chia_config.resolve(), new_text.encode("utf-8"))
    return True
