"""The sweep's figures in the Prometheus exposition."""

from __future__ import annotations

import pytest

pytest.importorskip("prometheus_client")

from credman.server.metrics import ServerMetrics


def test_a_sweep_sets_the_backlog_and_its_lateness_and_counts_outcomes() -> None:
    metrics = ServerMetrics()
    metrics.observe_sweep(due=3, refreshed=2, expired=0, failed=1, lateness=12.5)
    metrics.observe_sweep(due=1, refreshed=1, expired=0, failed=0, lateness=0.25)
    text = metrics.render().decode()
    assert "credman_due_credentials 1.0" in text
    assert "credman_sweep_lateness_seconds 0.25" in text  # the last sweep's, not the worst
    assert 'credman_refreshes_total{outcome="refreshed"} 3.0' in text
    assert 'credman_refreshes_total{outcome="failed"} 1.0' in text
    assert 'outcome="expired"' not in text
