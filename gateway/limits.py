"""Per-key rate limits: two token buckets per API key, one for requests and one for records.

Defaults come from settings (`MILLRACE_RATE_*`); a key may override each of them through
its `limits` field (`millrace keys create --requests-per-s ... --logs-per-s ... --burst-s ...`).
A bucket holds `rate * burst_s` tokens and refills continuously at `rate` per second.

The request bucket is checked right after authentication, before the body is read, so a
key over its rate costs the gateway almost nothing. The records bucket needs the record
count, so it is charged after the parse; a request is also refused early when that
bucket is already empty. A request carrying more records than the bucket can ever hold
is let through when the bucket is full and leaves it in debt, so a big batch is slowed
down rather than refused forever.

A dialect that can refuse single items (Elasticsearch `_bulk`, whose clients retry only the
items answered `429`) passes a `Split`: then a request that does not fit whole is admitted
in part, its first rows up to the whole tokens left, and the rest is answered `429` per item.
That is safe because the rows kept and the items refused are disjoint and the client resends
exactly the refused ones; it needs no debt either, as every retry makes progress. When not
even one row fits, the request is refused whole as for any dialect (nothing was stored, so a
client that resends whole requests cannot duplicate anything).

State lives in this process: with several gateway replicas (or processes) each one
limits on its own, so a key may get up to N times its rate across N replicas.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from formats import Parsed
from gateway.dialects.base import Problem, Split
from millrace.config import Settings
from millrace.keys import LIMIT_BURST_S, LIMIT_LOGS_PER_S, LIMIT_REQUESTS_PER_S, ApiKey


class TokenBucket:
    __slots__ = ("capacity", "rate", "stamp", "tokens")

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self.stamp = now

    def refill(self, now: float) -> None:
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def reshape(self, rate: float, capacity: float) -> None:
        """Follow a changed key record (or settings) without resetting what was spent."""
        self.rate = rate
        self.capacity = capacity
        self.tokens = min(self.tokens, capacity)

    def wait_for(self, n: float) -> float:
        """Seconds until `n` tokens could be taken (0 when they can be now); refill first."""
        need = min(n, self.capacity)  # more than a full bucket: admitted once it is full
        return 0.0 if self.tokens >= need else (need - self.tokens) / self.rate

    def take(self, n: float) -> None:
        self.tokens -= n  # may go negative: the debt of an over-sized batch


def retry_after(wait_s: float) -> int:
    """Whole seconds for Retry-After, never 0 (a client told 0 would retry at once)."""
    return max(1, math.ceil(wait_s))


def rate_limited(wait_s: float, what: str) -> Problem:
    seconds = retry_after(wait_s)
    return Problem(
        429, "rate_limited", f"this key is over its {what} rate; retry in {seconds} s", retry_after=seconds
    )


class Limits:
    """The gateway's admission checks that depend on the key: rates and the record cap."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.clock = clock
        self._requests: dict[str, TokenBucket] = {}
        self._records: dict[str, TokenBucket] = {}

    def _bucket(
        self, table: dict[str, TokenBucket], key: ApiKey, name: str, default: float
    ) -> TokenBucket | None:
        own = key.limits.get(name)  # a key's own 0 is "no limit" too, not "the default"
        rate = float(default if own is None else own)
        if rate <= 0:
            return None  # unlimited
        burst_s = float(key.limits.get(LIMIT_BURST_S) or self.settings.rate_burst_s)
        capacity = max(1.0, rate * burst_s)
        now = self.clock()
        bucket = table.get(key.key_id)
        if bucket is None:
            bucket = table[key.key_id] = TokenBucket(rate, capacity, now)
            return bucket
        bucket.refill(now)
        if bucket.rate != rate or bucket.capacity != capacity:
            bucket.reshape(rate, capacity)
        return bucket

    def before_body(self, key: ApiKey) -> Problem | None:
        """Charge one request; refuse when the request or the records bucket is empty."""
        requests = self._bucket(self._requests, key, LIMIT_REQUESTS_PER_S, self.settings.rate_requests_per_s)
        records = self._bucket(self._records, key, LIMIT_LOGS_PER_S, self.settings.rate_logs_per_s)
        if requests is not None and (wait := requests.wait_for(1)) > 0:
            return rate_limited(wait, "request")
        if records is not None and (wait := records.wait_for(1)) > 0:
            return rate_limited(wait, "log")
        if requests is not None:
            requests.take(1)
        return None

    def request(self, key: ApiKey) -> Problem | None:
        """Charge one request only (reads: they carry no records, and an ingest budget spent
        on logs must not lock the same key out of reading)."""
        requests = self._bucket(self._requests, key, LIMIT_REQUESTS_PER_S, self.settings.rate_requests_per_s)
        if requests is None:
            return None
        if (wait := requests.wait_for(1)) > 0:
            return rate_limited(wait, "request")
        requests.take(1)
        return None

    def after_parse(self, key: ApiKey, parsed: Parsed, split: Split | None = None) -> Problem | Parsed | None:
        """The global record cap, then charge the records the parse produced.

        None: all admitted. A Problem: the request is refused. A Parsed (only with `split`): the
        part admitted, which the gateway stores and answers instead of `parsed`.
        """
        cap = self.settings.max_records_per_request
        count = len(parsed.rows) + len(parsed.rejected)
        if count > cap:
            return Problem(413, "too_many_records", f"{count:,} records in one request; the limit is {cap:,}")
        records = self._bucket(self._records, key, LIMIT_LOGS_PER_S, self.settings.rate_logs_per_s)
        if records is None or not parsed.rows:
            return None
        wanted = len(parsed.rows)
        if split is not None and (fits := min(wanted, math.floor(records.tokens))) > 0:
            records.take(fits)
            if fits == wanted:
                return None
            return split(parsed, fits, rate_limited(records.wait_for(wanted - fits), "log"))
        if (wait := records.wait_for(wanted)) > 0:
            return rate_limited(wait, "log")
        records.take(wanted)
        return None
