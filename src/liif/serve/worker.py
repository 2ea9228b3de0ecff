"""Renders for the server: one model worker thread takes jobs in order, and another those that need no model
(bicubic), so that they never wait behind the model's; identical requests in flight are computed once; finished
images are kept in an LRU cache bounded in bytes; a job whose clients have all gone is dropped before it renders;
stopping answers every waiting client at once and ends the render in progress."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Awaitable, Callable, Hashable

from torch.nn.modules.module import register_module_forward_pre_hook

from liif.lru import ByteLRU
from liif.serve.iiif import IIIFError

STOPPING = "the server is stopping"


@dataclass
class Job:
    """A render in flight: how to compute it, the future its clients wait on, and how many wait."""

    compute: Callable[[], bytes]
    future: asyncio.Future
    waiters: int = 0


@dataclass
class Lane:
    """Jobs taken in order by one thread, ``executor``'s: one render at a time."""

    executor: ThreadPoolExecutor
    jobs: asyncio.Queue[Hashable] | None = None
    worker: asyncio.Task | None = None


@dataclass
class Stats:
    """What the queue did with the requests it was given, counted."""

    rendered: int = 0  # jobs computed
    shared: int = 0  # requests that joined a job already in flight
    dropped: int = 0  # jobs dropped because every client had gone
    cached: int = 0  # requests answered from the cache


class RenderQueue:
    """``await queue.get(key, compute, gone, model)``: the bytes ``compute()`` makes, computed at most once per key
    while in flight or cached, in the model's lane or (``model`` False) the other; None when ``gone`` (the client
    leaving) finishes first."""

    def __init__(self, max_bytes: int) -> None:
        self.results: ByteLRU[bytes] = ByteLRU(max_bytes, len)
        self.stats = Stats()
        self.pending: dict[Hashable, Job] = {}
        self.model_lane = Lane(ThreadPoolExecutor(max_workers=1, thread_name_prefix="liif-render",
                                                  initializer=self.note_render_thread))
        self.plain_lane = Lane(ThreadPoolExecutor(max_workers=1, thread_name_prefix="liif-plain"))
        self.render_thread: threading.Thread | None = None
        self.stopping = False

    def note_render_thread(self) -> None:
        """The model lane's initializer: remember its thread, the one ``halt`` stops."""
        self.render_thread = threading.current_thread()

    async def start(self) -> None:
        """Start each lane's worker on the running event loop (the app's startup)."""
        for lane in (self.model_lane, self.plain_lane):
            lane.jobs = asyncio.Queue()
            lane.worker = asyncio.create_task(self.work(lane))

    async def stop(self) -> None:
        """Stop at once (the server's shutdown, again a no-op): every client still waiting is answered 503, the
        model's render in progress ends at its next torch module call, and the workers and their threads end. Torch
        cannot be interrupted otherwise: the server waited for the render, minutes for a large one, after Ctrl-C."""
        if self.stopping:
            return
        self.stopping = True
        for job in self.pending.values():
            if not job.future.done():
                job.future.set_exception(IIIFError(503, STOPPING))
        halting = register_module_forward_pre_hook(self.halt)
        try:
            for lane in (self.model_lane, self.plain_lane):
                if lane.worker is not None:
                    lane.worker.cancel()
                    await asyncio.gather(lane.worker, return_exceptions=True)
                lane.executor.shutdown(wait=True)  # short: the model's render is halted, a bicubic one is quick
        finally:
            halting.remove()

    def halt(self, module: object, args: object) -> None:
        """A forward pre-hook of every torch module while stopping: the render thread's next module call raises."""
        if threading.current_thread() is self.render_thread:
            raise IIIFError(503, STOPPING)

    async def get(self, key: Hashable, compute: Callable[[], bytes],
                  gone: Callable[[], Awaitable[object]] | None = None, model: bool = True) -> bytes | None:
        """The bytes for ``key``: cached, joined to the job in flight, or queued in the model's lane (``model``: it
        uses the model) or the other; None if ``gone`` ends first; a 503 IIIFError once stopping."""
        if self.stopping:
            raise IIIFError(503, STOPPING)
        cached = self.results.get(key)
        if cached is not None:
            self.stats.cached += 1
            return cached
        job = self.pending.get(key)
        if job is None:
            job = self.pending[key] = Job(compute, asyncio.get_running_loop().create_future())
            job.future.add_done_callback(lambda f: f.cancelled() or f.exception())  # seen, even if nobody waits
            (self.model_lane if model else self.plain_lane).jobs.put_nowait(key)
        else:
            self.stats.shared += 1
        job.waiters += 1
        leaving = asyncio.ensure_future(gone()) if gone is not None else None
        try:
            if leaving is None:
                return await asyncio.shield(job.future)
            done, _ = await asyncio.wait({job.future, leaving}, return_when=asyncio.FIRST_COMPLETED)
            return job.future.result() if job.future in done else None
        finally:
            job.waiters -= 1
            if leaving is not None:
                leaving.cancel()

    async def work(self, lane: Lane) -> None:
        """A lane's worker: run its queued jobs one at a time in its thread, dropping those nobody awaits."""
        loop = asyncio.get_running_loop()
        while True:
            key = await lane.jobs.get()
            job = self.pending[key]
            try:
                if job.waiters == 0:
                    self.stats.dropped += 1
                    job.future.cancel()
                    continue
                try:
                    result = await loop.run_in_executor(lane.executor, job.compute)
                except Exception as exc:  # the request's error goes to every client waiting for it
                    job.future.set_exception(exc)
                else:
                    self.stats.rendered += 1
                    self.results.put(key, result)
                    job.future.set_result(result)
            finally:
                del self.pending[key]
