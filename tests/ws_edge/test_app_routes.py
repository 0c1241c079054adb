"""What the edge's public port serves: API docs only when enabled, metrics never (EDGE_METRICS_PORT)."""

from __future__ import annotations

from ws_edge.app import create_app
from ws_edge.config import EdgeSettings

DOCS = {"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}


def paths(settings: EdgeSettings) -> set[str]:
    return set(route_paths(create_app(settings).api.routes))


def route_paths(routes):  # type: ignore[no-untyped-def]
    """Every path served, routers included by `include_router` too."""
    for route in routes:
        if hasattr(route, "original_router"):
            yield from route_paths(route.original_router.routes)
        else:
            yield route.path


def test_api_docs_only_when_enabled_and_metrics_never_on_the_public_port():
    default = paths(EdgeSettings())
    assert not default & DOCS and "/metrics" not in default
    assert {"/healthz", "/readyz", "/api/tasks", "/api/tasks/{task_id}"} <= default
    enabled = paths(EdgeSettings(api_docs=True))
    assert enabled >= DOCS and "/metrics" not in enabled
