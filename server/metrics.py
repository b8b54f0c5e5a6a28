"""Prometheus metrics, on a registry of the app's own (several apps may share a process
in tests)."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("flywheel_requests", "Generation requests by endpoint",
                                ["endpoint"], registry=self.registry)
        self.time_to_first_token = Histogram(
            "flywheel_time_to_first_token_seconds", "Time from request to first token",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=self.registry)
        self.tokens_per_second = Histogram(
            "flywheel_tokens_per_second", "Decode speed of each finished answer",
            buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000), registry=self.registry)
        self.completion_tokens = Counter("flywheel_completion_tokens", "Tokens generated",
                                         registry=self.registry)
        self.queue_depth = Gauge("flywheel_queue_depth", "Requests waiting for a batch slot",
                                 registry=self.registry)
        self.active_streams = Gauge("flywheel_active_streams", "Answers being generated",
                                    registry=self.registry)
        self.loaded_adapters = Gauge("flywheel_loaded_adapters", "LoRA adapters in memory",
                                     registry=self.registry)
        self.votes = Counter("flywheel_votes", "Feedback received, by kind", ["kind"],
                             registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)
