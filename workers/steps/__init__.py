"""The worker's steps, one module each; `workers/pipeline.py` chains them."""

from workers.steps.base import GiveUp, Message, MessageRejected, Step
from workers.steps.batch import Batch, BatchLines, TableBatch
from workers.steps.commit import Commit
from workers.steps.dead_letters import SendDeadLetters
from workers.steps.decode import Decode, Decoded, decode_envelope
from workers.steps.enrich import Enrich, Line
from workers.steps.insert import Insert, InsertFn, insert_table, store_insert
from workers.steps.skip_stored import SkipStored

__all__ = [
    "Batch",
    "BatchLines",
    "Commit",
    "Decode",
    "Decoded",
    "Enrich",
    "GiveUp",
    "Insert",
    "InsertFn",
    "Line",
    "Message",
    "MessageRejected",
    "SendDeadLetters",
    "SkipStored",
    "Step",
    "TableBatch",
    "decode_envelope",
    "insert_table",
    "store_insert",
]
