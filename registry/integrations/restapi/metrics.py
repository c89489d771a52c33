"""The REST API's Prometheus metrics and the middleware that counts, times and refreshes."""

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from registry.errors import RegistryError
from registry.integrations.restapi.index import ReadIndex, Stale

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class Metrics:
    def __init__(self, index: ReadIndex) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("registry_api_requests", "HTTP requests answered.",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("registry_api_request_duration_seconds", "Time to answer a request.",
                                 ["method", "route"], registry=self.registry,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.registry.register(_RegistryCollector(index))


class _RegistryCollector(Collector):
    """The served commit's age and the models per stage, computed when scraped."""

    def __init__(self, index: ReadIndex) -> None:
        self.index = index

    def collect(self) -> list[Metric]:
        snap = self.index.current()
        metrics: list[Metric] = [
            GaugeMetricFamily("registry_commit_age_seconds", "Seconds since the served commit was made.",
                              value=max(0.0, time.time() - snap.committed_at)),
            GaugeMetricFamily("registry_commit_timestamp_seconds", "Commit time of the served commit.",
                              value=snap.committed_at),
            CounterMetricFamily("registry_api_fetch_failures", "Refreshes of --ref that failed.",
                                value=self.index.fetch_failures),
        ]
        if self.index.last_fetch is not None:
            metrics.append(GaugeMetricFamily("registry_api_last_fetch_timestamp_seconds",
                                             "When --ref was last fetched.", value=self.index.last_fetch))
        try:
            counts = snap.inventory().stage_counts()
        except (RegistryError, Stale):
            return metrics
        models = GaugeMetricFamily("registry_models", "Models with at least one version in the stage.",
                                   labels=["stage"])
        for stage, count in counts.items():
            models.add_metric([stage], count)
        metrics.append(models)
        return metrics


class Observe:
    """ASGI middleware: count and time every request by route template; start due refreshes."""

    def __init__(self, app: ASGIApp, metrics: Metrics, index: ReadIndex) -> None:
        self.app = app
        self.metrics = metrics
        self.index = index

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.index.maybe_refresh()
        started = time.perf_counter()
        status = [500]

        async def observe(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observe)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.latency.labels(scope["method"], route).observe(time.perf_counter() - started)
            self.metrics.requests.labels(scope["method"], route, str(status[0])).inc()
