"""One (rule, group)'s state machine: ok -> pending -> firing -> resolved, one event per move.

Pure: given where a group stood and its value now, where it stands next and the event of
the transition, if any. The event id is derived from the rule, the group and the
transition's sequence number, so evaluating the same transition twice (after a crash
between writing the event and writing the state) yields the same id, which the store
keeps once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Any

from reads.alerts import Rule

NOTIFYING = frozenset({"firing", "resolved"})  # the transitions webhooks are told about


@dataclass(frozen=True, slots=True)
class GroupState:
    group_key: str
    state: str = "ok"
    since_ns: int = 0
    seq: int = 0  # transitions so far: the next one's number
    value: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "group_key": self.group_key,
            "state": self.state,
            "since_ns": self.since_ns,
            "seq": self.seq,
            "value": self.value,
        }


def event_id(project: str, rule_id: str, group_key: str, seq: int) -> str:
    digest = hashlib.sha256(f"{project}\0{rule_id}\0{group_key}\0{seq}".encode()).hexdigest()
    return f"evt_{digest[:32]}"


def step(
    rule: Rule, prior: GroupState, value: float, now_ns: int, retired: bool = False
) -> tuple[GroupState, dict[str, Any] | None]:
    """The group's next state and the transition's event (None when it stays put). A `retired`
    rule (deleted or disabled) holds no more: firing resolves, pending goes back to ok."""
    holds = not retired and rule.holds(value)
    current = prior.state
    nxt = current
    if holds:
        if current in ("ok", "resolved"):
            nxt = "firing" if rule.for_s == 0 else "pending"
        elif current == "pending" and now_ns - prior.since_ns >= rule.for_s * 1_000_000_000:
            nxt = "firing"
    elif current == "pending":
        nxt = "ok"
    elif current == "firing":
        nxt = "resolved"
    if nxt == current:
        return replace(prior, value=value), None
    event = {
        "project": rule.project,
        "event_id": event_id(rule.project, rule.id, prior.group_key, prior.seq),
        "timestamp_ns": now_ns,
        "rule_id": rule.id,
        "rule_name": rule.name,
        "group_key": prior.group_key,
        "state": nxt,
        "previous_state": current,
        "value": value,
        "op": rule.op,
        "threshold": rule.threshold,
        "seq": prior.seq,
    }
    return GroupState(prior.group_key, nxt, now_ns, prior.seq + 1, value), event
