"""The host's describe cache: Plans per (statement text, catalog version), least recently used
evicted first, with hit and miss counters that tests and benchmarks read.

It stores Plans only (metadata and lifted literals never reach the host); it must not describe.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

from engine import log
from engine.sql.plan import Plan

__all__ = ["DescribeCache"]


class DescribeCache:
    """An LRU map from (text, version) to Plan.

    >>> cache = DescribeCache(capacity=2)
    >>> plan = cache.get_or_describe("SELECT 1", 1, lambda: Plan("query", "SELECT 1"))
    >>> cache.get_or_describe("SELECT 1", 1, lambda: Plan("query", "other")) is plan
    True
    >>> cache.hits, cache.misses
    (1, 1)
    """

    def __init__(self, capacity: int = 512) -> None:
        self._capacity = capacity
        self._plans: OrderedDict[tuple[str, int], Plan] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get_or_describe(self, text: str, version: int, describe: Callable[[], Plan]) -> Plan:
        """The cached Plan, or ``describe()``'s, which is cached (failures never are)."""
        key = (text, version)
        with self._lock:
            plan = self._plans.get(key)
            if plan is not None:
                self._plans.move_to_end(key)
                self.hits += 1
                log.describe_cache("host")
                return plan
            self.misses += 1
        plan = describe()
        log.describe_cache("host", plan)
        with self._lock:
            self._plans[key] = plan
            while len(self._plans) > self._capacity:
                self._plans.popitem(last=False)
        return plan

    def clear(self) -> None:
        with self._lock:
            self._plans.clear()

    def __len__(self) -> int:
        return len(self._plans)
