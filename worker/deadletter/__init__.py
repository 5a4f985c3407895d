"""Dead letters: parking records a route could not process, with everything to replay them.

The destinations' settings (:class:`DeadLetterConfig`) live with the rest of the config in
:mod:`worker.config`; they are re-exported here for handler authors and tools.
"""

from __future__ import annotations

from worker.config import DeadLetterConfig
from worker.deadletter.base import DeadLetterDestination, DeadLetterSource, Parked
from worker.deadletter.dynamodb import DynamoDbDeadLetters
from worker.deadletter.errors import DeadLetterDecodeError, DeadLetterTooLarge
from worker.deadletter.factory import build_dead_letter_source, build_dead_letters
from worker.deadletter.jsonl import JsonlDeadLetters
from worker.deadletter.message import ERROR_CLASSES, DeadLetter, ErrorClass, dead_letter_id
from worker.deadletter.sns import SnsDeadLetters
from worker.deadletter.sqs import SqsDeadLetters

__all__ = [
    "ERROR_CLASSES",
    "DeadLetter",
    "DeadLetterConfig",
    "DeadLetterDecodeError",
    "DeadLetterDestination",
    "DeadLetterSource",
    "DeadLetterTooLarge",
    "DynamoDbDeadLetters",
    "ErrorClass",
    "JsonlDeadLetters",
    "Parked",
    "SnsDeadLetters",
    "SqsDeadLetters",
    "build_dead_letter_source",
    "build_dead_letters",
    "dead_letter_id",
]
