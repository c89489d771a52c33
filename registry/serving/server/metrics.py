"""The built-in server's Prometheus metrics (`/metrics`), in a CollectorRegistry of its own.

The names are a contract (CONTEXT15 C3): the Grafana dashboard reads exactly these.
"""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "METRIC_NAMES", "Metrics"]

REQUESTS = "registry_model_requests_total"
ERRORS = "registry_model_request_errors_total"
DURATION = "registry_model_request_duration_seconds"
SERVED = "registry_served_version_info"
SWAPS = "registry_model_swaps_total"
SWAP_FAILURES = "registry_model_swap_failures_total"  # beyond C3: a version refused at load time

METRIC_NAMES = (REQUESTS, ERRORS, DURATION, SERVED, SWAPS, SWAP_FAILURES)


class Metrics:
    """The counters, histogram and gauges of one server."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # prometheus-client appends `_total` to counters itself: name them without it.
        self.requests = Counter(REQUESTS.removesuffix("_total"), "Inference requests answered, by HTTP status code",
                                ["model", "version", "code"], registry=self.registry)
        self.errors = Counter(ERRORS.removesuffix("_total"), "Inference requests that failed (status >= 500)",
                              ["model", "version"], registry=self.registry)
        self.duration = Histogram(DURATION, "Time to answer an inference request", ["model", "version"],
                                  registry=self.registry)
        self.served = Gauge(SERVED, "The version a model serves in a role (1 while served)",
                            ["model", "version", "role"], registry=self.registry)
        self.swaps = Counter(SWAPS.removesuffix("_total"), "Versions switched to (the first load counts)",
                             ["model"], registry=self.registry)
        self.swap_failures = Counter(SWAP_FAILURES.removesuffix("_total"),
                                     "Versions not switched to: they failed to load or to answer input_example",
                                     ["model", "version"], registry=self.registry)

    def request(self, model: str, version: str, code: int, seconds: float) -> None:
        self.requests.labels(model, version, str(code)).inc()
        self.duration.labels(model, version).observe(seconds)
        if code >= 500:
            self.errors.labels(model, version).inc()

    def serving(self, model: str, role: str, version: str | None, before: str | None) -> None:
        if before is not None:
            with contextlib.suppress(KeyError):
                self.served.remove(model, before, role)
        if version is not None:
            self.served.labels(model, version, role).set(1)

    def text(self) -> bytes:
        return generate_latest(self.registry)
