"""OpenTelemetry traces of a message's way: publisher → push service → broker → edge → sockets.

Off unless a process turns it on (`configure`: `*_TRACING=otlp|file`); then spans go to an OTLP
collector (the exporter reads `OTEL_EXPORTER_OTLP_ENDPOINT` and its other standard variables) or, one
JSON object per line, to a file. Hot paths test `ENABLED` (a module global) before anything else, so
tracing off costs one attribute read per batch and allocates nothing.

Sampling is decided once, where a trace starts (the publisher library, or the edge for its connect and
subscribe spans: `sampled_root()`, at the process's ratio); downstream follows the decision carried in
the W3C trace context: a `traceparent` in gRPC metadata (a unary publish) and in the message
(`OutgoingMessage.traceparent` on a stream, `Delivery.traceparent` through the broker and the edge's
stream). Only sampled messages carry one, so an unsampled message costs the push service and the edge
nothing. A message published without trace context is not traced.
"""

from __future__ import annotations

import random
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import orjson
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

Exporter = Literal["off", "otlp", "file"]
ENABLED = False  # read on hot paths: tracing is configured in this process
METADATA_KEY = "traceparent"  # the W3C header, as gRPC metadata (lower case)
TRACEPARENT = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
_ratio = 1.0
_tracer: trace.Tracer = trace.NoOpTracer()
_propagator = TraceContextTextMapPropagator()
# Spans of one process sent in batches from a thread of the SDK's; a file exporter writes every second.
FILE_EXPORT_DELAY_MS = 1000

__all__ = ["ENABLED", "Link", "Span", "SpanKind", "Status", "StatusCode", "configure", "context_of", "link", "metadata", "sampled",
           "sampled_root", "start_span", "traceparent"]


def configure(service: str, exporter: Exporter, *, file: Path | None = None, ratio: float = 1.0) -> None:
    """Turn tracing on for this process (nothing happens for "off"). `ratio`: the share of traces
    started here that are sampled; spans whose parent came with a message follow its decision."""
    global ENABLED, _ratio, _tracer
    if exporter == "off":
        return
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased

    # The ratio is applied by sampled_root(), before any span is made; the SDK records what it is given.
    provider = TracerProvider(resource=Resource.create({"service.name": service}), sampler=ParentBased(ALWAYS_ON))
    if exporter == "file":
        if file is None:
            raise ValueError("the file exporter needs a file")
        provider.add_span_processor(BatchSpanProcessor(JsonLinesExporter(file, service),
                                                       schedule_delay_millis=FILE_EXPORT_DELAY_MS))
    else:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)  # libraries in this process (pushclient) trace with it too
    _tracer = provider.get_tracer("pushsystem")
    _ratio = ratio
    ENABLED = True


def sampled_root() -> bool:
    """Whether a trace that would start here is sampled (the process's ratio)."""
    return ENABLED and (_ratio >= 1.0 or random.random() < _ratio)


def sampled(traceparent: str) -> bool:
    """Whether a W3C traceparent (`00-<trace id>-<span id>-<flags>`) says its trace is sampled; one that
    is not well formed (it comes from a publisher: any text) says no."""
    return TRACEPARENT.fullmatch(traceparent) is not None and int(traceparent[53:], 16) & 1 == 1


def context_of(traceparent: str) -> Context | None:
    return _propagator.extract({METADATA_KEY: traceparent}) if traceparent else None


def start_span(name: str, *, parent: str | Span | None = None, kind: SpanKind = SpanKind.INTERNAL,
               attributes: Mapping[str, Any] | None = None, links: Sequence[Link] = ()) -> Span:
    """A span (end it, or use it as a context manager: `with start_span(...) as span`): the child of
    `parent` (a traceparent from a message or metadata, or a span of this process), else of the
    current span, else a new trace's root."""
    context = trace.set_span_in_context(parent) if isinstance(parent, Span) else context_of(parent or "")
    return _tracer.start_span(name, context=context, kind=kind, attributes=attributes, links=links)


def traceparent(span: Span) -> str:
    """The span's W3C traceparent, for a message or metadata ("" for a span that is not recorded)."""
    c = span.get_span_context()
    if not c.is_valid or not c.trace_flags.sampled:
        return ""
    return f"00-{c.trace_id:032x}-{c.span_id:016x}-{int(c.trace_flags):02x}"


def metadata(span: Span) -> tuple[tuple[str, str], ...]:
    """gRPC metadata that carries the span's context to the callee."""
    value = traceparent(span)
    return ((METADATA_KEY, value),) if value else ()


def link(traceparent: str) -> Link:
    return Link(trace.get_current_span(context_of(traceparent)).get_span_context())


def from_metadata(pairs: Iterable[tuple[str, str | bytes]]) -> str:
    """The traceparent among a call's metadata ("" when none)."""
    for key, value in pairs:
        if key == METADATA_KEY and isinstance(value, str):
            return value
    return ""


class JsonLinesExporter:
    """Spans as JSON lines in a file (tests, and a look without a collector): name, ids, parent,
    kind, times (ns), status, attributes, links. One file may take several processes' spans (each
    line is one append)."""

    def __init__(self, path: Path, service: str) -> None:
        self._path = path
        self._service = service
        self._lock = threading.Lock()

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        lines = b"".join(orjson.dumps(self._record(s)) + b"\n" for s in spans)
        with self._lock, self._path.open("ab") as out:
            out.write(lines)
        return SpanExportResult.SUCCESS

    def _record(self, span: Any) -> dict[str, Any]:
        c = span.get_span_context()
        return {
            "service": self._service, "name": span.name, "kind": span.kind.name,
            "trace_id": f"{c.trace_id:032x}", "span_id": f"{c.span_id:016x}",
            "parent_span_id": f"{span.parent.span_id:016x}" if span.parent is not None else None,
            "start_ns": span.start_time, "end_ns": span.end_time, "status": span.status.status_code.name,
            "attributes": dict(span.attributes or {}),
            "links": [{"trace_id": f"{k.context.trace_id:032x}", "span_id": f"{k.context.span_id:016x}"}
                      for k in span.links],
        }

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def flush() -> None:
    """Export the spans still waiting (a process that ends without the SDK's exit handler: a forked child)."""
    if ENABLED:
        trace.get_tracer_provider().force_flush()  # type: ignore[attr-defined]


def configure_from(settings: Any, service: str) -> None:
    """`configure` from a service's TracingSettings (common/settings.py)."""
    configure(service, settings.tracing, file=settings.trace_file, ratio=settings.trace_sample_ratio)


def current_sampled() -> bool:
    """Whether the caller is inside a sampled span (its application traces): a publish is its child."""
    return ENABLED and trace.get_current_span().get_span_context().trace_flags.sampled
