"""What the edge's public port serves: API docs only when enabled, metrics never (EDGE_METRICS_PORT)."""

from __future__ import annotations

from ws_edge.app import create_app
from ws_edge.config import EdgeSettings

DOCS = {"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}


def paths(settings: EdgeSettings) -> set[str]:
    return {route.path for route in create_app(settings).api.routes}  # type: ignore[attr-defined]


def test_api_docs_only_when_enabled_and_metrics_never_on_the_public_port():
    default = paths(EdgeSettings())
    assert not default & DOCS and "/metrics" not in default
    assert {"/healthz", "/readyz", "/api/tasks", "/api/tasks/{task_id}"} <= default
    enabled = paths(EdgeSettings(api_docs=True))
    assert enabled >= DOCS and "/metrics" not in enabled
