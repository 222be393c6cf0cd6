"""Drop the kept parts of plots this plotter can never resume: their source is gone.

A transfer that fails part way leaves its part on the harvester, journaled, for a resume; it
holds a plot's space until ``harvester.resume_keep_hours`` pass.  Only this plotter can resume
it (the journal names this plotter's very source file), so once the source is no longer among
this plotter's plots (deleted by the farmer, moved by hand, sent elsewhere) the part is garbage.
Each run, before anything else, the plotter looks at its own record: plots whose last attempt
failed on some harvester and that it no longer has.  For each it runs ``receive_plot.sh
--forget NAME`` on that harvester once, and the harvester's next minute pass removes the part
(``utilities/transfer/forget.py``).  A run with nothing to forget connects to no one.

``parts_to_forget`` is the pure decision; ``forget_gone_sources`` does the SSH and the record.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, NamedTuple

from utilities.remote import RemoteError
from utilities.settings.farm import HarvesterTarget
from utilities.state import StateDB
from utilities.transfer.channel import ExecFn
from utilities.transfer.protocol import FORGET_NOTED, build_forget_command

log = logging.getLogger(__name__)

FORGOTTEN_KEY = "forgotten_parts"
# The longest a harvester keeps a part (harvester.resume_keep_hours allows 30 days).
LOOK_BACK_SECONDS = 30 * 24 * 3600.0
MAX_REMEMBERED = 2000
# A receiver that answers usage (an older harvester without --forget) has nothing to forget.
_USAGE_STATUS = 2
COMMAND_TIMEOUT = 60.0


class Abandoned(NamedTuple):
    """A plot whose last attempt failed on ``harvester``, where its part is named ``destination``."""

    plot: str
    harvester: str
    destination: str


def parts_to_forget(
    abandoned: Sequence[Abandoned], present: Collection[str], forgotten: Collection[tuple[str, str]]
) -> list[Abandoned]:
    """The abandoned attempts whose source this plotter no longer has and that were not
    forgotten before (pure)."""
    return [a for a in abandoned if a.plot not in present and (a.plot, a.harvester) not in forgotten]


def present_names(directories: Sequence[str]) -> set[str] | None:
    """Every file name in the plot directories (finished or not: a source still there, in any
    state, is never forgotten); None when one cannot be listed, so nothing is forgotten."""
    names: set[str] = set()
    for directory in directories:
        try:
            names.update(os.listdir(directory))
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.info("cannot list %s (%s): no kept parts are dropped this run", directory, exc.strerror)
            return None
    return names


def parse_forgotten(raw: Any) -> set[tuple[str, str]]:
    """The recorded (plot, harvester) pairs already forgotten; malformed entries dropped."""
    pairs = set()
    for item in raw if isinstance(raw, list) else []:
        if isinstance(item, list) and len(item) == 2 and all(isinstance(v, str) for v in item):
            pairs.add((item[0], item[1]))
    return pairs


def forget_gone_sources(
    db: StateDB,
    present: Collection[str],
    targets: Mapping[str, HarvesterTarget],
    exec_for: Callable[[HarvesterTarget], ExecFn],
    now: float | None = None,
) -> list[Abandoned]:
    """Ask each harvester holding a part of a plot whose source is gone to drop it; the
    requests noted (recorded, never sent twice).  Unreachable harvesters are asked next run."""
    now = time.time() if now is None else now
    forgotten = parse_forgotten(db.get(FORGOTTEN_KEY))
    todo = parts_to_forget(
        [Abandoned(*row) for row in db.abandoned_attempts(now - LOOK_BACK_SECONDS)], present, forgotten
    )
    done: list[Abandoned] = []
    for item in todo:
        target = targets.get(item.harvester)
        if target is None:  # no longer in the farm: nobody to ask
            done.append(item)
            continue
        try:
            noted = _ask(exec_for(target), target, item.destination)
        except RemoteError as exc:
            log.info("cannot ask %s to drop the kept part of %s now: %s", item.harvester, item.destination, exc)
            continue
        if noted:
            log.info("%s: its source is gone, so %s drops its kept part", item.destination, item.harvester)
            done.append(item)
    if done:
        kept = [[p, h] for p, h in sorted(forgotten)] + [[a.plot, a.harvester] for a in done]
        db.set(FORGOTTEN_KEY, kept[-MAX_REMEMBERED:])
    return done


def _ask(exec_fn: ExecFn, target: HarvesterTarget, name: str) -> bool:
    """Run ``receive_plot.sh --forget NAME`` there: True when it is noted or the harvester has
    no such option (nothing to forget on an older one)."""
    process = exec_fn(build_forget_command(target.receive_script, name))
    try:
        process.close_stdin()
        answer = process.stdout.readline(4096)
        status = process.wait(COMMAND_TIMEOUT)
    finally:
        process.kill()
    text = answer.decode(errors="replace") if isinstance(answer, bytes) else str(answer)
    if status == 0 and text.startswith(FORGET_NOTED):
        return True
    if status == _USAGE_STATUS:
        return True
    log.info("%s did not note dropping %s's part (status %s): %s", target.name, name, status,
             text.strip() or process.stderr_text())
    return False
