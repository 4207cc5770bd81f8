"""`driftline retrainer` with one Faust fault injected: the first message of the alerts topic is
fetched and then dropped before it reaches its agent, Faust's read position moving past it, as
faust-streaming 0.15 sometimes does after a start (see `stream.consumer_stall`). Run as a script
with the retrainer's arguments."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import faust.transport.consumer as faust_consumer

from driftline.cli import main

_getmany = faust_consumer.Consumer.getmany
_dropped: list[int] = []


async def _dropping_getmany(self: Any, timeout: float) -> AsyncIterator[tuple[Any, Any]]:
    async for tp, message in _getmany(self, timeout):
        if not _dropped and tp.topic.endswith(".alerts"):
            _dropped.append(message.offset)
            self._read_offset[tp] = message.offset  # Faust's bookkeeping moves on without it
            print(f"fault injected: dropped {tp.topic}[{tp.partition}] offset {message.offset}", flush=True)
            continue
        yield tp, message


faust_consumer.Consumer.getmany = _dropping_getmany  # type: ignore[method-assign]

if __name__ == "__main__":
    main()
