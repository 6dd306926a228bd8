"""Operations on a capability's dead-letter stream: read, requeue, purge."""

from __future__ import annotations

from collections.abc import Sequence

from dispatcher.settings import FLOW_WINDOW
from dispatcher.store import scripts
from dispatcher.store.gateway import Op, check, text
from dispatcher.store.keys import CapabilityKeys
from dispatcher.store.wire import Requeued, requeued

Letter = tuple[str, dict[bytes, bytes]]


def read(keys: CapabilityKeys, after: str, count: int) -> Op[list[Letter]]:
    """Up to ``count`` dead letters with ids after ``after`` ("-" for the oldest), oldest first."""
    start = "-" if after == "-" else "(" + after
    reply = check((yield [("XRANGE", keys.dead, start, "+", "COUNT", count)])[0])
    return [(text(entry_id), fields) for entry_id, fields in reply]


def length(keys: CapabilityKeys) -> Op[int]:
    """How many dead letters the capability holds."""
    return int(check((yield [("XLEN", keys.dead)])[0]))


def requeue(
    keys: CapabilityKeys, letters: Sequence[tuple[str, str, str]], window: int = FLOW_WINDOW
) -> Op[list[Requeued]]:
    """Requeue (letter id, task id, lane) triples with a fresh attempt count; what became of each. A task with a
    lane (``wire.lane``) waits in its waiting set again (``window``: the admission window of a task with a
    priority alone); "" puts it straight onto the stream."""
    if not letters:
        return []
    replies = yield [
        scripts.call(
            "requeue",
            [keys.stream, keys.index, keys.dead, keys.result(task_id), *keys.waiting_sets],
            [letter_id, task_id, lane, window],
        )
        for letter_id, task_id, lane in letters
    ]
    return [requeued(check(r)) for r in replies]


def delete(keys: CapabilityKeys, letter_ids: Sequence[str]) -> Op[int]:
    """Delete these dead letters; returns how many existed."""
    if not letter_ids:
        return 0
    return int(check((yield [("XDEL", keys.dead, *letter_ids)])[0]))


def drop_all(keys: CapabilityKeys) -> Op[int]:
    """Delete the whole dead-letter stream; returns how many letters it held."""
    count, _ = yield [("XLEN", keys.dead), ("DEL", keys.dead)]
    return int(check(count))
