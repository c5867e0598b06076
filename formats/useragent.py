"""Request-level enrichment: User-Agent fields, computed once per distinct User-Agent."""

from __future__ import annotations

from functools import lru_cache
from typing import Final, NamedTuple

from ua_parser import parse as parse_ua

_OS_NAMES: Final = {"Mac OS X": "macOS"}
_MOBILE_OS: Final = frozenset({"iOS", "Android", "Windows Phone", "BlackBerry OS", "KaiOS", "HarmonyOS"})
_DESKTOP_OS: Final = frozenset(
    {"Mac OS X", "Windows", "Linux", "Ubuntu", "Fedora", "Chrome OS", "FreeBSD", "Debian"}
)
_TABLETS: Final = ("iPad", "Tablet", "Kindle", "Nexus 7", "Nexus 9", "Nexus 10", "SM-T", "Galaxy Tab")


class Agent(NamedTuple):
    browser: str  # "Chrome 125"
    os: str  # "macOS 14"
    device: str  # Desktop, Mobile, Tablet, Bot or Other


@lru_cache(maxsize=8192)
def user_agent(header: str) -> Agent:
    """Parse a User-Agent header; clients send few distinct values, so the cache hit rate is high."""
    if not header:
        return Agent("", "", "")
    result = parse_ua(header[:512])
    ua, os, device = result.user_agent, result.os, result.device
    browser = f"{ua.family} {ua.major}" if ua and ua.major else (ua.family if ua else "")
    os_family = os.family if os else ""
    os_name = _OS_NAMES.get(os_family, os_family)
    os_text = f"{os_name} {os.major}" if os and os.major else os_name
    return Agent(browser, os_text, _device_class(os_family, device.family if device else "", header))


def _device_class(os_family: str, device_family: str, header: str) -> str:
    if device_family == "Spider" or "bot" in header.lower():
        return "Bot"
    if any(t in device_family for t in _TABLETS) or (os_family == "Android" and "Mobile" not in header):
        return "Tablet"
    if os_family in _MOBILE_OS:
        return "Mobile"
    if os_family in _DESKTOP_OS:
        return "Desktop"
    return "Other"
