"""The one protocol every step of the worker's chain keeps.

A step is handed its next step when built (the chain is wired in `workers/pipeline.py`
only). Messages carry their offsets: `committable` is, per partition, the offset to
commit once this message and everything before it are stored; steps that merge
messages merge those maps, and only the last step commits them.

- `submit(message)`: take one message, or raise `MessageRejected` when it cannot be taken
  now (the insert is busy or failing). That is backpressure: the consumer pauses its
  partitions and offers the same message again later; no step ever sleeps.
- `poll()`: do what time or finished work asks (flush a batch that is old enough, pick up
  an insert that finished, retry one whose backoff is over), then poll the next step.
- `join()`: finish everything taken so far (shutdown, partition revocation).
- `close()`: release what the step holds; after `join()`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from aiokafka import TopicPartition

T2 = TypeVar("T2")
T_co = TypeVar("T_co", covariant=True)
T_contra = TypeVar("T_contra", contravariant=True)


class MessageRejected(Exception):
    """The step cannot take the message now; offer it again after a poll."""


class GiveUp(Exception):
    """`join()` while stopping and the store keeps failing: what is held stays uncommitted
    (the next owner of its partitions reads it again; the dedup token keeps that exact)."""


@dataclass(frozen=True, slots=True)
class Message(Generic[T_co]):
    payload: T_co
    committable: dict[TopicPartition, int] = field(default_factory=dict)

    def replace(self, payload: T2) -> Message[T2]:
        return Message(payload, self.committable)


class Step(Protocol[T_contra]):
    def submit(self, message: Message[T_contra]) -> None: ...

    async def poll(self) -> None: ...

    async def join(self) -> None: ...

    def close(self) -> None: ...


class Forward:
    """For a step whose work is all in `submit`: poll, join and close go on to the next step."""

    next: Step[Any]

    async def poll(self) -> None:
        await self.next.poll()

    async def join(self) -> None:
        await self.next.join()

    def close(self) -> None:
        self.next.close()
