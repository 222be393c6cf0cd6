"""Text for people: the one set of formatters behind every report and notification.

Two line shapes, one per medium. ``report_line`` right-aligns the value in the 60-column
terminal reports (``-pr``, ``-fr``, framed by ``banner``); ``leader`` joins label and value with
dots in e-mails and ``coin_monitor.py --summary``, so the values line up in a monospaced font.
Either way a value nobody supplied reads ``n/a``, never blank or ``None``. Sizes have two
spellings: ``format_size`` ("10.9T", the original tool's short form in reports and e-mails)
and ``binary_size`` ("1.5 GiB", in sentences and tables). A drive's temperature and SMART
health read the same wherever they are shown.

Pure and cheap to import: every role prints or sends text, so nothing here may pull in a role
package or a heavy library.
"""

from __future__ import annotations

import datetime as dt
import math
import sys

#: Shown for a value the caller did not supply, so a half-filled report still reads cleanly.
MISSING = "n/a"
#: Width of the terminal reports: their ``#`` rules, and the column values are aligned to.
REPORT_WIDTH = 60
#: Column where values start in ``leader`` lines, so every value lines up in a monospaced font.
LEADER_WIDTH = 40


# -- terminal reports -----------------------------------------------------------------------------


def banner(title: str, width: int = REPORT_WIDTH) -> list[str]:
    """A '#' rule, the title centred inside '#', and another rule."""
    rule = "#" * width
    return [rule, f" {title} ".center(width, "#"), rule]


def report_line(label: str, value: object, width: int = REPORT_WIDTH) -> str:
    """``Label:`` left, value right-aligned to ``width`` (at least one space between)."""
    text = MISSING if value is None else str(value)
    gap = max(1, width - len(label) - len(text))
    return f"{label}{' ' * gap}{text}"


# -- leader lines (e-mails, summaries) ------------------------------------------------------------


def _is_undefined(value: object) -> bool:
    """A template variable Jinja2 could not resolve; none can exist before jinja2 is imported."""
    jinja2_module = sys.modules.get("jinja2")
    return jinja2_module is not None and isinstance(value, jinja2_module.Undefined)


def format_value(value: object) -> str:
    """Render one report value; anything missing becomes ``n/a`` rather than blank or ``None``."""
    if value is None or _is_undefined(value) or value == "":
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return MISSING if math.isnan(value) else f"{value:,.2f}"
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, (list, tuple, set, frozenset)):
        return ", ".join(format_value(item) for item in value) or MISSING
    return str(value)


def leader(label: object, value: object, unit: str = "", width: int = LEADER_WIDTH) -> str:
    """``Drive Size...........10.9T``: label, dots up to ``width``, value (+ unit if numeric).

    The unit is only appended to numbers so a caller passing a preformatted ``"41°C"`` does not
    get ``"41°C°C"``, and a missing value stays a bare ``n/a``.
    """
    text = format_value(value)
    if unit and isinstance(value, (int, float)) and not isinstance(value, bool) and text != MISSING:
        text += unit
    label_text = str(label)
    return label_text + "." * max(3, width - len(label_text)) + text


def labelize(key: object) -> str:
    """``free_slots`` -> ``Free slots``, for the generic template's key/value lines."""
    words = str(key).replace("_", " ").strip()
    return words[:1].upper() + words[1:]


# -- sizes ----------------------------------------------------------------------------------------


def format_size(num_bytes: int) -> str:
    """The short form of reports and e-mails: "512B", "1.5K" ... "10.9T" (powers of 1024)."""
    value = float(num_bytes)
    for unit in ("B", "K", "M", "G", "T", "P"):
        if value < 1024 or unit == "P":
            return f"{value:.1f}{unit}" if unit != "B" else f"{int(value)}B"
        value /= 1024
    return f"{value:.1f}P"


def binary_size(num_bytes: float) -> str:
    """Sizes in messages and tables people read: "512 B", "1.5 GiB", "3.2 TiB"."""
    value = float(num_bytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} PiB"


# -- drives ---------------------------------------------------------------------------------------


def temperature_text(state: str, celsius: int | None) -> str:
    """A drive's temperature: "41°C"; "standby" for a disk asleep (it is not woken to ask);
    ``n/a`` when SMART is unavailable or reports none. ``state`` is SMART's: active, standby,
    unavailable."""
    if state == "unavailable":
        return MISSING
    if state == "standby":
        return "standby"
    return f"{celsius}°C" if celsius is not None else MISSING


def health_text(state: str, health: str | None) -> str:
    """A drive's SMART assessment ("PASSED"), with the same "standby" and ``n/a`` as its
    temperature."""
    if state == "unavailable":
        return MISSING
    if state == "standby":
        return "standby"
    return health or MISSING
