"""The coin monitor's run: what it keeps in the state database, and for how long."""

from __future__ import annotations

from pathlib import Path

from utilities.farmer.monitor import ensure_schema, prune_conditions
from utilities.state import StateDB


def test_old_conditions_are_pruned_coins_kept(tmp_path: Path) -> None:
    with StateDB(tmp_path / "state.sqlite3") as db:
        ensure_schema(db)
        with db.transaction() as cur:
            for kind, age_days, status in (("pool_error", 100, "notified"), ("pool_error", 100, "pending"),
                                           ("pool_error", 10, "notified"), ("coin_received", 400, "notified")):
                cur.execute(
                    "INSERT INTO farm_events(kind, key, happened_at, stamp, detail, status) VALUES (?, ?, ?, '', '', ?)",
                    (kind, f"{kind}{age_days}{status}", 1e9 - age_days * 86400, status),
                )
        prune_conditions(db, 1e9)
        left = sorted(db.query("SELECT kind, status FROM farm_events"))
    assert left == [("coin_received", "notified"), ("pool_error", "notified"), ("pool_error", "pending")]
