"""What the harness reads from the database: claims and their due times, sizes, plans.

Lateness needs the due time each refresh acted on, which the rows do not keep (the next
due time of a refreshed token carries random jitter). The harness adds, in its own schema
only, a trigger on ``credential`` that records every claim (a move to REFRESHING) with the
due time it replaced, and every end of a refresh with the state it ended in, both stamped
with ``clock_timestamp()``. It is one extra insert per claim and per commit, measured
with the rest; credman's own tables and code are unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, text

__all__ = [
    "DUE_QUERY",
    "Lateness",
    "claims_between",
    "explain_due",
    "install_claim_log",
    "sizes",
]

_CLAIM_LOG = """
CREATE TABLE bench_claim (
    n bigserial PRIMARY KEY,
    credential_id text NOT NULL,
    kind text NOT NULL,
    due_at timestamptz,
    at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX bench_claim_at ON bench_claim (at);
CREATE INDEX bench_claim_credential ON bench_claim (credential_id, n);
CREATE FUNCTION bench_claim_log() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.state = 'REFRESHING' AND OLD.state <> 'REFRESHING' THEN
        INSERT INTO bench_claim (credential_id, kind, due_at)
            VALUES (NEW.id, 'claim', OLD.next_due_at);
    ELSIF OLD.state = 'REFRESHING' AND NEW.state <> 'REFRESHING' THEN
        INSERT INTO bench_claim (credential_id, kind, due_at) VALUES (NEW.id, NEW.state, NULL);
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER bench_claim_log AFTER UPDATE OF state ON credential
    FOR EACH ROW EXECUTE FUNCTION bench_claim_log();
"""

DUE_QUERY = (
    "SELECT credential.id, credential.type, credential.public, credential.sealed "
    "FROM credential WHERE credential.next_due_at <= :now "
    "ORDER BY credential.next_due_at LIMIT :limit"
)
"""The sweep's due query (``tick``'s ``_due``), as SQLAlchemy renders it."""


def install_claim_log(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.exec_driver_sql(_CLAIM_LOG)


@dataclass(frozen=True, slots=True)
class Lateness:
    """Claims of dues that fell inside a window, and how late they were (seconds)."""

    claims: int
    p50: float | None
    p99: float | None
    max: float | None
    done_p50: float | None
    done_p99: float | None
    done_max: float | None
    outcomes: Mapping[str, int]
    twice: int
    """Credentials claimed twice for the same due time (a second refresh in one period)."""
    unclaimed: int
    """Dues inside the window still not claimed at its end."""


def claims_between(connection: Connection, start: datetime, end: datetime) -> Lateness:
    """Lateness of the dues in [start, end): claim time and commit time minus due time."""
    connection.execute(text("ANALYZE bench_claim"))  # fresh statistics for the plans below
    late = connection.execute(
        text(
            """
            WITH ordered AS (
                -- each row with the earliest outcome after it on its credential: one sort,
                -- where a correlated subquery could go quadratic on a fresh, unanalysed table
                SELECT kind, due_at, at,
                       min(CASE WHEN kind <> 'claim' THEN at END) OVER (
                           PARTITION BY credential_id ORDER BY n
                           ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING
                       ) AS done_at
                  FROM bench_claim
            ), c AS (
                SELECT due_at, at, done_at
                  FROM ordered
                 WHERE kind = 'claim' AND due_at >= :start AND due_at < :end
            )
            SELECT count(*) AS n,
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM at - due_at)),
                   percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM at - due_at)),
                   max(extract(epoch FROM at - due_at)),
                   percentile_cont(0.5) WITHIN GROUP
                       (ORDER BY extract(epoch FROM done_at - due_at)),
                   percentile_cont(0.99) WITHIN GROUP
                       (ORDER BY extract(epoch FROM done_at - due_at)),
                   max(extract(epoch FROM done_at - due_at))
              FROM c
            """
        ),
        {"start": start, "end": end},
    ).one()
    outcomes = connection.execute(
        text(
            "SELECT kind, count(*) FROM bench_claim WHERE kind <> 'claim' "
            "AND at >= :start AND at < :end GROUP BY kind"
        ),
        {"start": start, "end": end},
    ).all()
    twice = connection.execute(
        text(
            "SELECT count(*) FROM (SELECT credential_id, due_at FROM bench_claim "
            "WHERE kind = 'claim' AND due_at >= :start AND due_at < :end "
            "GROUP BY credential_id, due_at HAVING count(*) > 1) AS t"
        ),
        {"start": start, "end": end},
    ).scalar_one()
    unclaimed = connection.execute(
        text(
            "SELECT count(*) FROM credential WHERE next_due_at >= :start "
            "AND next_due_at < :end AND state <> 'REFRESHING' "
            "AND next_due_at < clock_timestamp()"
        ),
        {"start": start, "end": end},
    ).scalar_one()
    return Lateness(
        claims=late[0],
        p50=_f(late[1]),
        p99=_f(late[2]),
        max=_f(late[3]),
        done_p50=_f(late[4]),
        done_p99=_f(late[5]),
        done_max=_f(late[6]),
        outcomes={kind: count for kind, count in outcomes},
        twice=twice,
        unclaimed=unclaimed,
    )


def _f(value: Any) -> float | None:
    return None if value is None else round(float(value), 3)


def explain_due(engine: Engine, now: datetime, limit: int) -> tuple[str, float]:
    """``EXPLAIN (ANALYZE, BUFFERS)`` of the due query at ``now``: plan text, execution ms."""
    with engine.connect() as connection:
        rows = connection.execute(
            text("EXPLAIN (ANALYZE, BUFFERS) " + DUE_QUERY), {"now": now, "limit": limit}
        ).scalars()
        plan = "\n".join(rows)
    executed = next(
        (line for line in plan.splitlines() if line.strip().startswith("Execution Time")), ""
    )
    milliseconds = float(executed.split(":")[1].split()[0]) if executed else float("nan")
    return plan, milliseconds


def sizes(engine: Engine) -> dict[str, Any]:
    """Bytes (tables with indexes and TOAST) and row high-water marks of credman's tables."""
    with engine.connect() as connection:
        sizes = {
            table: connection.execute(
                text("SELECT pg_total_relation_size(CAST(:t AS regclass))"), {"t": table}
            ).scalar_one()
            for table in ("credential", "credential_history", "audit_event")
        }
        audit_rows = connection.execute(text("SELECT seq FROM audit_head")).scalar_one()
        history_rows = connection.execute(
            text("SELECT coalesce(max(id), 0) FROM credential_history")
        ).scalar_one()
        schema = connection.execute(
            text(
                "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = current_schema() AND c.relkind = 'r'"
            )
        ).scalar_one()
    return {
        "bytes": sizes,
        "schema_bytes": int(schema or 0),
        "audit_rows": int(audit_rows),
        "history_rows": int(history_rows),
    }


def overdue(connection: Connection, before: datetime) -> int:
    """Credentials whose due time is at or before ``before`` and not yet taken."""
    return int(
        connection.execute(
            text("SELECT count(*) FROM credential WHERE next_due_at <= :before"),
            {"before": before},
        ).scalar_one()
    )


def refreshed_counts(connection: Connection, start: datetime, end: datetime) -> dict[str, int]:
    """Successful refreshes per credential recorded in history between the two times."""
    rows = connection.execute(
        text(
            "SELECT credential_id, count(*) FROM credential_history "
            "WHERE trigger = 'refresh_succeeded' AND at >= :start AND at < :end "
            "GROUP BY credential_id"
        ),
        {"start": start, "end": end},
    ).all()
    return {cid: count for cid, count in rows}


def audit_counts(connection: Connection, after_seq: int, upto_seq: int) -> dict[Any, int]:
    """Audit events with seq in (after_seq, upto_seq] by (action, outcome, principal).

    A refresh that lost its lease is counted under the outcome ``lease_lost``. Audit
    order (seq) is used rather than ``at``: a sweep stamps every event of one tick with the
    tick's start time.
    """
    rows = connection.execute(
        text(
            "SELECT action, CASE WHEN CAST(detail AS jsonb) ->> 'error' = 'lease_lost' "
            "THEN 'lease_lost' ELSE outcome END, principal, count(*) FROM audit_event "
            "WHERE seq > :a AND seq <= :b GROUP BY 1, 2, 3"
        ),
        {"a": after_seq, "b": upto_seq},
    ).all()
    return {(action, outcome, principal): count for action, outcome, principal, count in rows}
