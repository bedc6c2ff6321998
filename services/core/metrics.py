"""Prometheus metrics of gRPC calls, kept in a registry owned by the server (no process-global state)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, start_http_server

# Seconds; from sub-millisecond cache hits to slow training calls.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


def _split(method: str) -> tuple[str, str]:
    service, _, name = method.lstrip("/").partition("/")
    return service, name


class GrpcMetrics:
    """Counters and latency histograms per gRPC service, method and status code."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._started = Counter(
            "bullant_grpc_server_started_total",
            "RPCs started on the server.",
            ("grpc_service", "grpc_method"),
            registry=self.registry,
        )
        self._handled = Counter(
            "bullant_grpc_server_handled_total",
            "RPCs completed on the server, by status code.",
            ("grpc_service", "grpc_method", "grpc_code"),
            registry=self.registry,
        )
        self._latency = Histogram(
            "bullant_grpc_server_handling_seconds",
            "Time from the start of an RPC to its status, by status code.",
            ("grpc_service", "grpc_method", "grpc_code"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._sent = Counter(
            "bullant_grpc_server_msg_sent_total",
            "Messages sent on server-streaming RPCs.",
            ("grpc_service", "grpc_method"),
            registry=self.registry,
        )
        self._http: Any = None

    def started(self, method: str) -> None:
        """Count an RPC that has begun."""
        self._started.labels(*_split(method)).inc()

    def handled(self, method: str, code: str, seconds: float, messages_sent: int | None = None) -> None:
        """Count a finished RPC with its status code and duration."""
        service, name = _split(method)
        self._handled.labels(service, name, code).inc()
        self._latency.labels(service, name, code).observe(seconds)
        if messages_sent:
            self._sent.labels(service, name).inc(messages_sent)

    def exposition(self) -> bytes:
        """The registry in Prometheus text format."""
        return bytes(generate_latest(self.registry))

    def serve_http(self, host: str, port: int) -> int:
        """Serve /metrics on host:port in a background thread; returns the bound port (port 0 picks one)."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._http = server
        return int(server.server_address[1])

    def stop_http(self) -> None:
        """Stop the /metrics endpoint if it runs."""
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
