"""The one time rule's text times (formats.common.parse_timestamp): `YYYY-MM-DDTHH:MM:SS[.f][Z]`
is read by hand (`_utc_iso_ns`), every other text by `datetime.fromisoformat`. Both must give
what the datetime arithmetic gives, checked here against an oracle written with `timedelta`
(not the parser's arithmetic): every month's last day of 1970..2100, leap days, fractions of
1 to 9 digits, zones, and texts with one character changed or cut short.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from formats.common import _utc_iso_ns, parse_timestamp

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
LAST_NS = 4_102_444_800 * 10**9  # 2100-01-01T00:00:00Z, the last time the rule takes


def oracle(text: str) -> int | None:
    try:
        dt = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    ns = (dt - EPOCH) // timedelta(microseconds=1) * 1000
    return ns if 0 < ns <= LAST_NS else None


def texts(rng: random.Random) -> list[str]:
    out = []
    for year in range(1969, 2102):
        for month in range(1, 13):
            for day in (1, 28, 29, 30, 31):
                out.append(f"{year:04d}-{month:02d}-{day:02d}T23:59:59Z")
    for _ in range(20_000):
        year = rng.choice([1970, 1972, 2000, 2024, 2026, 2099, 2100, rng.randint(1900, 2200)])
        text = f"{year:04d}-{rng.randint(0, 13):02d}-{rng.randint(0, 32):02d}T"
        text += f"{rng.randint(0, 24):02d}:{rng.randint(0, 60):02d}:{rng.randint(0, 60):02d}"
        if rng.random() < 0.7:
            text += "." + "".join(rng.choice("0123456789") for _ in range(rng.randint(0, 10)))
        text += rng.choice(["", "Z", "Z", "+00:00", "+05:30", "-08:00", "z", "ZZ", " "])
        roll = rng.random()
        if roll < 0.15:
            at = rng.randrange(len(text))
            text = text[:at] + rng.choice("0123456789-T:.Z+ é") + text[at + 1 :]
        elif roll < 0.2:
            text = text[: rng.randrange(len(text) + 1)]
        out.append(text)
    return out


def test_text_times_give_what_the_datetime_arithmetic_gives() -> None:
    # A text without `-` at [4] is read as a number first (`"2024"` is a Unix time): not here.
    cases = [text for text in texts(random.Random(5)) if text.strip()[4:5] == "-"]
    by_hand = 0
    for text in cases:
        assert parse_timestamp(text) == oracle(text), text
        by_hand += _utc_iso_ns(text) >= 0
    assert by_hand > len(cases) // 4  # the hand reader took its share, not nothing


def test_spelled_out_times() -> None:
    assert parse_timestamp("2026-12-07T22:01:02.123Z") == 1_796_680_862_123_000_000
    assert parse_timestamp("2026-12-07T22:01:02.123456789Z") == 1_796_680_862_123_456_000
    assert parse_timestamp("2024-02-29T00:00:00") == 1_709_164_800 * 10**9
    assert parse_timestamp("2100-01-01T00:00:00Z") == LAST_NS
    assert parse_timestamp("2100-01-01T00:00:00.000001Z") is None
    assert parse_timestamp("1970-01-01T00:00:00Z") is None  # the epoch is a placeholder
    assert parse_timestamp("2023-02-29T00:00:00Z") is None
    assert parse_timestamp("2026-12-07T22:01:02+01:00") == 1_796_677_262 * 10**9
