"""Reading a service's Prometheus /metrics: samples by name and labels, and what moved between reads."""

from __future__ import annotations

import asyncio
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(*urls: str) -> Samples:
    """Every sample of every URL; the same series on several replicas is summed."""
    samples: Samples = {}
    for url in urls:
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                samples[key] = samples.get(key, 0.0) + sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


async def reaches(url: str, name: str, at_least: float, within: float) -> None:
    """Until `name` on `url` reads `at_least` (polled every 50 ms), or TimeoutError after `within` s:
    a state the service reports, waited for instead of a fixed sleep."""
    async with asyncio.timeout(within):
        while value(scrape(url), name) < at_least:
            await asyncio.sleep(0.05)


async def falls_to(url: str, name: str, at_most: float, within: float) -> None:
    """Until `name` on `url` reads `at_most` or less (polled every 50 ms), or TimeoutError after
    `within` s. (A sample the service does not expose reads 0: name one it does.)"""
    async with asyncio.timeout(within):
        while value(scrape(url), name) > at_most:
            await asyncio.sleep(0.05)


async def publisher_settled(metrics_url: str, limit: float) -> Samples:
    """A task service's metrics once its publisher has had its retained task list accepted (sent when
    its stream first connects) and holds nothing unanswered: what it counts from then on is a test's
    own. On a loaded machine the stream connects late, and that list, with the tasks a test had started
    meanwhile, came after the lists the test waited for."""
    deadline = time.monotonic() + limit
    while True:
        samples = await asyncio.to_thread(scrape, metrics_url)
        figures = {name: value(samples, name) for name in ("push_publisher_accepted_messages_total",
                                                           "push_publisher_buffered_messages")}
        if figures["push_publisher_accepted_messages_total"] >= 1 and figures["push_publisher_buffered_messages"] == 0:
            return samples
        if time.monotonic() > deadline:
            raise AssertionError(f"the task service's publisher did not settle: {figures}")
        await asyncio.sleep(0.05)
