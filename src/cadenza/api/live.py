"""The server's live run feeds: one poller per watched run, shared by its clients.

What belongs here: keeping an `EventLog` (api/events.py) per watched run up to date from the
store while someone listens, and turning it into a Server-Sent Events byte stream with
heartbeats. What does not: diffing and ids (`events.py`), the route (`routes/events.py`).

Cost: one poll (`LiveStore.run_progress`: the run row and its task instances' state columns,
one primary-key range) per watched run every `poll_s`, however many clients watch it; none
when nobody does. A run whose read costs much (tens of thousands of mapped instances) is
polled less often, so that reading takes at most BUSY_SHARE of its poller's time. What a
read costs is the CPU time of the thread that made it, not its wall time: on a loaded
machine the wall time mostly waits for a core, and backing off on it delayed a 2,000-task
run's changes by up to a second. The store read runs in a worker thread, off the event loop.

A feed lives in this process (a bounded LRU of `keep` runs): its poller runs while it has
clients and stops when the last one leaves or the run has ended; its log stays, so a client
that reconnects within the LRU's reach resumes exactly where it was. Opening a feed whose
poller is not running reads the run again, so an ended run that was retried or resumed
since goes on in the same log. `close()` (server
shutdown) ends every stream, so uvicorn's graceful shutdown is not held up by open streams.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable

import anyio.to_thread

from cadenza.api.events import HEARTBEAT, EventLog, encode, preamble
from cadenza.core.errors import CadenzaError, RunNotFound
from cadenza.core.progress import RunProgress
from cadenza.store import RunStore
from cadenza.store.live import live_store

log = logging.getLogger(__name__)

# The largest share of a poller's time spent reading the store (see RunFeeds._poll).
BUSY_SHARE = 0.2
# After a failed read, the next comes after STORE_DOWN_S / BUSY_SHARE - STORE_DOWN_S (4 s).
STORE_DOWN_S = 1.0


class _Feed:
    def __init__(self, run_id: str) -> None:
        self.log = EventLog(run_id)
        self.changed = asyncio.Condition()
        self.clients = 0
        self.poller: asyncio.Task[None] | None = None
        self.gone = False  # the run was deleted while watched
        # One read at a time: a slow older read applied after a newer one would go back.
        self.reading = asyncio.Lock()


class RunFeeds:
    """The live feeds of one app (kept on `app.state`).

    Example:
        >>> feeds = RunFeeds(store, poll_s=0.25)
        >>> stream = await feeds.open("20260101-abc", last_event_id=None)  # 404s here
        >>> async for chunk in stream: ...
    """

    def __init__(self, store: RunStore, *, poll_s: float = 0.25, heartbeat_s: float = 15.0,
                 keep: int = 64) -> None:
        self._live = live_store(store)
        self.poll_s = poll_s
        self.heartbeat_s = heartbeat_s
        self._keep = keep
        self._feeds: OrderedDict[str, _Feed] = OrderedDict()
        self._closed = False

    async def _read(self, feed: _Feed) -> float:
        """One poll: append what changed and tell the waiting streams if something did.
        Returns the CPU seconds the read took. RunNotFound propagates."""
        async with feed.reading:
            progress, cpu = await anyio.to_thread.run_sync(self._timed_read, feed.log.run_id)
            if feed.log.update(progress) == 0:
                return cpu
        async with feed.changed:
            feed.changed.notify_all()
        return cpu

    def _timed_read(self, run_id: str) -> tuple[RunProgress, float]:
        started = time.thread_time()
        progress = self._live.run_progress(run_id)
        return progress, time.thread_time() - started

    async def _poll(self, feed: _Feed) -> None:
        """Poll while the feed has clients and the run has not ended."""
        took = 0.0
        try:
            while feed.clients > 0 and not feed.log.is_final and not self._closed:
                # A big run's read costs more: poll it less often, so one poller spends
                # at most a fifth of its time reading (BUSY_SHARE; CPU time, see above).
                await asyncio.sleep(max(self.poll_s, took * (1 / BUSY_SHARE - 1)))
                try:
                    took = await self._read(feed)
                except RunNotFound:
                    feed.gone = True
                except CadenzaError as exc:  # the store is unreachable: say so, try again
                    log.warning("live events of run %s: %s", feed.log.run_id, exc)
                    took = STORE_DOWN_S  # a few seconds between tries, not a log line per poll
                    continue
                if feed.gone:
                    break
        finally:
            feed.poller = None
            async with feed.changed:
                feed.changed.notify_all()

    async def open(self, run_id: str, *, last_event_id: str | None) -> AsyncIterator[bytes] | None:
        """The event stream of `run_id` for a client that last saw `last_event_id`.

        Reads the run first: RunNotFound (-> 404) before any byte is sent. None when the
        client has already seen the whole stream of a run that has ended (-> 204).
        """
        feed = self._feeds.get(run_id)
        if feed is None:
            feed = self._feeds[run_id] = _Feed(run_id)
            try:
                await self._read(feed)
            except RunNotFound:
                if self._feeds.get(run_id) is feed:
                    del self._feeds[run_id]
                raise
            self._evict()
        else:
            self._feeds.move_to_end(run_id)
            if feed.poller is None:
                # Also how an ended run that was retried or resumed since comes back to life.
                try:
                    await self._read(feed)
                except RunNotFound:
                    if self._feeds.get(run_id) is feed:
                        del self._feeds[run_id]
                    raise
        if feed.log.is_done_for(last_event_id):
            return None
        return self._stream(feed, feed.log.start(last_event_id))

    def _evict(self) -> None:
        """Drop the least recently opened feeds nobody listens to, down to `keep`."""
        idle = [r for r, f in self._feeds.items() if f.clients == 0 and f.poller is None]
        for run_id in idle[:max(0, len(self._feeds) - self._keep)]:
            del self._feeds[run_id]

    def _start_poller(self, feed: _Feed) -> None:
        if feed.poller is None and not feed.log.is_final and not self._closed:
            feed.poller = asyncio.get_running_loop().create_task(
                self._poll(feed), name=f"live events {feed.log.run_id}")

    def _woken(self, feed: _Feed, sent: int) -> Callable[[], bool]:
        """A client that has sent `sent` events has more to do."""
        return lambda: len(feed.log.events) > sent or feed.poller is None or self._closed

    async def _stream(self, feed: _Feed, start: int) -> AsyncIterator[bytes]:
        feed.clients += 1
        try:
            self._start_poller(feed)
            yield preamble()
            sent = start
            events = feed.log.events
            while True:
                if sent < len(events):
                    chunk = events[sent:]
                    sent += len(chunk)
                    yield encode(feed.log, chunk)
                    continue
                if feed.log.is_final or feed.gone or self._closed:
                    return
                self._start_poller(feed)  # the previous one stopped between two clients
                idle = False
                async with feed.changed:
                    # asyncio.timeout, not wait_for: the wait stays in this task, which holds
                    # the lock (wait_for's own task could, on Python 3.11 under uvloop, come
                    # back from a timed-out wait without the lock: "cannot wait on
                    # un-acquired lock").
                    try:
                        async with asyncio.timeout(self.heartbeat_s):
                            await feed.changed.wait_for(self._woken(feed, sent))
                    except TimeoutError:
                        idle = True
                if idle:  # never yield while holding the lock the poller notifies under
                    yield HEARTBEAT
        finally:
            feed.clients -= 1

    async def close(self) -> None:
        """End every stream and stop every poller (server shutdown)."""
        self._closed = True
        for feed in list(self._feeds.values()):
            async with feed.changed:
                feed.changed.notify_all()
            if feed.poller is not None:
                feed.poller.cancel()
