"""Prometheus metrics of one server process (``GET /metrics``, the text exposition format).

``credman_http_requests_total{method,route,status}`` and
``credman_http_request_duration_seconds{method,route}`` are labelled by the route
*template* (``/v1/credentials/{credential_id}/access``), never the raw path, so ids do not
explode the label space. ``credman_refreshes_total{outcome}`` counts the sweep's
refreshes, expiries and failures and the on-demand refreshes; ``credman_due_credentials``
is how many credentials the last sweep found due, and ``credman_sweep_lateness_seconds``
how far past its due time the most overdue of them was (alert when it keeps growing: the
sweep is not keeping up).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "ServerMetrics"]


class ServerMetrics:
    """The collectors of one app, in their own registry (several apps may share a process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "credman_http_requests",
            "HTTP requests by method, route template and status.",
            ("method", "route", "status"),
            registry=self.registry,
        )
        self.duration = Histogram(
            "credman_http_request_duration_seconds",
            "HTTP request duration by method and route template.",
            ("method", "route"),
            registry=self.registry,
        )
        self.refreshes = Counter(
            "credman_refreshes",
            "Credential refreshes by outcome (refreshed, expired, failed).",
            ("outcome",),
            registry=self.registry,
        )
        self.due = Gauge(
            "credman_due_credentials",
            "Credentials the last sweep found due (the backlog).",
            registry=self.registry,
        )
        self.lateness = Gauge(
            "credman_sweep_lateness_seconds",
            "How far past its due time the most overdue credential of the last sweep was.",
            registry=self.registry,
        )

    def __repr__(self) -> str:
        return "ServerMetrics()"

    def observe_sweep(
        self, *, due: int, refreshed: int, expired: int, failed: int, lateness: float = 0.0
    ) -> None:
        """Count what one sweep did."""
        self.due.set(due)
        self.lateness.set(lateness)
        for outcome, count in (("refreshed", refreshed), ("expired", expired), ("failed", failed)):
            if count:
                self.refreshes.labels(outcome).inc(count)

    def render(self) -> bytes:
        """The text exposition of every collector."""
        return generate_latest(self.registry)
