"""OpenTelemetry tracing: the tracer provider of one worker, its exporter, and trace-context propagation.

The provider is created in each worker after gunicorn forks (in the app's lifespan), never at import time
nor in the master: the batch span processor runs a thread, and threads do not survive a fork.

Exporters: ``otlp`` (OTLP over HTTP to ``OTEL_EXPORTER_OTLP_ENDPOINT``; the exporter's other ``OTEL_*``
variables apply; the ``otlp`` extra), ``console`` (development), ``none``. X-Ray ids and propagation need the
``xray`` extra. With ``none`` every span is sampled out: spans still carry a trace id (for the logs, and to
propagate an incoming one), but none is recorded, so tracing costs next to nothing when nothing exports it.
"""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import Getter, TextMapPropagator
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, Sampler
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from productos.domain.errors import ConfigurationError

#: Request headers that can carry an incoming trace context (W3C and AWS X-Ray).
TRACE_HEADERS = frozenset({"traceparent", "tracestate", "x-amzn-trace-id"})


class _LowerCaseHeaders(Getter[Mapping[str, str]]):
    """Reads a carrier of lower-case header names (ASGI's) for propagators that ask in any case."""

    def get(self, carrier: Mapping[str, str], key: str) -> list[str] | None:
        value = carrier.get(key.lower())
        return None if value is None else [value]

    def keys(self, carrier: Mapping[str, str]) -> list[str]:
        return list(carrier)


_HEADERS = _LowerCaseHeaders()


class Tracing:
    """One worker's tracer and propagator.

    Args:
        provider: the tracer provider (its processors decide what is exported).
        propagator: reads the incoming trace context from request headers.
        xray: trace ids are X-Ray ids (an epoch second, then random bits) and logs show them X-Ray style too.
        recording: whether the provider records spans (has an exporter); when not, request spans are made
            without the SDK: the same ids, the same context, a fraction of the cost.
        id_generator: the provider's id generator (for the spans made without the SDK).
    """

    def __init__(
        self,
        provider: TracerProvider,
        propagator: TextMapPropagator,
        *,
        xray: bool = False,
        recording: bool = True,
        id_generator: IdGenerator | None = None,
    ) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("productos")
        self.propagator = propagator
        self.xray = xray
        self.recording = recording
        self._ids = id_generator or RandomIdGenerator()

    def start_request_span(self, name: str, parent: Context | None, method: str) -> Span:
        """The span of an incoming request, a child of ``parent`` (the caller's context) if it has one."""
        if self.recording:
            return self.tracer.start_span(
                name, context=parent, kind=SpanKind.SERVER, attributes={"http.request.method": method}
            )
        # What the SDK makes of a span its sampler drops (nothing exports): ids and context, no recording.
        caller = trace.get_current_span(parent).get_span_context() if parent is not None else None
        if caller is not None and caller.is_valid:
            trace_id, trace_state = caller.trace_id, caller.trace_state
        else:
            trace_id, trace_state = self._ids.generate_trace_id(), None
        return NonRecordingSpan(SpanContext(trace_id, self._ids.generate_span_id(), False, TraceFlags(0), trace_state))

    def extract(self, carrier: Mapping[str, str]) -> Context:
        """The context an incoming request's headers (lower-case names) carry."""
        return self.propagator.extract(carrier, getter=_HEADERS)

    def shutdown(self) -> None:
        """Export what is pending and stop the processors' threads (blocks: call it in a thread)."""
        self.provider.shutdown()


#: What asks for each optional exporter, as the error for a missing extra says it.
OTLP_SETTING = "PRODUCTOS_OTEL_EXPORTER=otlp (or OTEL_EXPORTER_OTLP_ENDPOINT with PRODUCTOS_OTEL_EXPORTER=auto)"
XRAY_SETTING = "PRODUCTOS_XRAY=true"


def missing_extra(setting: str, extra: str, exc: ImportError) -> ConfigurationError:
    """The error for a setting that needs an extra of productos that is not installed."""
    missing = f" (no module {exc.name})" if exc.name else ""
    return ConfigurationError(
        f"{setting} needs the {extra!r} extra of productos, which is not installed{missing}: "
        f"pip install 'productos[{extra}]'"
    )


def span_exporter(kind: str, endpoint: str | None) -> SpanExporter | None:
    """The span exporter ``kind`` names (``otlp``, ``console`` or ``none``: ``None``).

    Raises:
        ConfigurationError: ``otlp`` without the ``otlp`` extra.
    """
    if kind == "none":
        return None
    if kind == "console":
        return ConsoleSpanExporter()
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError as exc:
        raise missing_extra(OTLP_SETTING, "otlp", exc) from exc

    return OTLPSpanExporter(endpoint=f"{endpoint.rstrip('/')}/v1/traces" if endpoint else None)


def create_tracing(resource: Resource, *, exporter: str, endpoint: str | None, xray: bool) -> Tracing:
    """A tracer provider exporting to ``exporter`` (``otlp``, ``console`` or ``none``).

    Raises:
        ConfigurationError: the exporter or X-Ray was asked for and its extra is not installed.
    """
    span_export = span_exporter(exporter, endpoint)
    # Nothing exported: sample every span out (see the module's docstring). Otherwise the SDK's default,
    # parent-based always-on, which ``OTEL_TRACES_SAMPLER`` can change.
    sampler: Sampler | None = ALWAYS_OFF if span_export is None else None
    id_generator: IdGenerator | None = None
    propagator: TextMapPropagator = TraceContextTextMapPropagator()
    if xray:
        try:
            from opentelemetry.propagators.aws import AwsXRayPropagator
            from opentelemetry.sdk.extension.aws.trace import AwsXRayIdGenerator
        except ImportError as exc:
            raise missing_extra(XRAY_SETTING, "xray", exc) from exc
        id_generator = AwsXRayIdGenerator()
        # X-Ray last: when both headers come in, the ALB's or API Gateway's X-Ray context wins.
        propagator = CompositePropagator([TraceContextTextMapPropagator(), AwsXRayPropagator()])
    id_generator = id_generator or RandomIdGenerator()
    provider = TracerProvider(sampler=sampler, resource=resource, id_generator=id_generator, shutdown_on_exit=False)
    if span_export is not None:
        processor = SimpleSpanProcessor(span_export) if exporter == "console" else BatchSpanProcessor(span_export)
        provider.add_span_processor(processor)
    _install_globally(provider, propagator)
    return Tracing(provider, propagator, xray=xray, recording=span_export is not None, id_generator=id_generator)


def _install_globally(provider: TracerProvider, propagator: TextMapPropagator) -> None:
    # The application's own spans (``trace.get_tracer(__name__)``) and outgoing clients' propagation use the
    # global provider and propagator. OpenTelemetry allows setting the provider once per process; a second
    # app in the same process (tests) keeps using its own provider explicitly.
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        trace.set_tracer_provider(provider)
        propagate.set_global_textmap(propagator)
