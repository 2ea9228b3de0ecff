"""The render queue: a worker for the model and one beside it, identical requests computed once, results cached,
gone clients dropped, stopped at once."""

from __future__ import annotations

import asyncio
import threading
import time

import torch

from liif.serve.iiif import IIIFError
from liif.serve.worker import RenderQueue


def test_identical_requests_in_flight_are_computed_once():
    calls = []

    def compute(key):
        def work():
            calls.append(key)
            return key.encode() * 10
        return work

    async def scenario():
        queue = RenderQueue(max_bytes=1000)
        await queue.start()
        answers = await asyncio.gather(*(queue.get(key, compute(key)) for key in ["a", "b", "a", "a", "b", "c"]))
        again = await queue.get("a", compute("a"))
        await queue.stop()
        return queue, answers, again

    queue, answers, again = asyncio.run(scenario())
    assert answers == [k.encode() * 10 for k in ["a", "b", "a", "a", "b", "c"]] and again == b"a" * 10
    assert sorted(calls) == ["a", "b", "c"]
    assert (queue.stats.rendered, queue.stats.shared, queue.stats.cached) == (3, 3, 1)


def test_a_request_whose_client_has_gone_is_dropped_before_it_renders():
    release = threading.Event()
    calls = []

    def slow():
        calls.append("slow")
        release.wait(10)
        return b"slow"

    def never():
        calls.append("never")
        return b"never"

    async def scenario():
        queue = RenderQueue(max_bytes=1000)
        await queue.start()
        first = asyncio.create_task(queue.get("slow", slow))
        left = asyncio.Event()
        leaving = asyncio.create_task(queue.get("never", never, gone=left.wait))
        await asyncio.sleep(0.1)  # the worker is busy with "slow"; "never" waits in the queue
        left.set()  # its client disconnects
        assert await leaving is None
        release.set()
        assert await first == b"slow"
        await asyncio.sleep(0.1)
        await queue.stop()
        return queue

    queue = asyncio.run(scenario())
    assert calls == ["slow"] and queue.stats.dropped == 1 and not queue.pending


def test_a_render_without_the_model_does_not_wait_behind_the_models():
    """Bicubic answers (the viewer's overview and the left of its split view: milliseconds each) queued behind
    every LIIF render asked before them, seconds each on a CPU. They now have a thread of their own."""
    release = threading.Event()

    def liif():
        release.wait(20)
        return b"liif"

    async def scenario():
        queue = RenderQueue(max_bytes=1000)
        await queue.start()
        rendering = asyncio.create_task(queue.get("liif", liif))
        await asyncio.sleep(0.1)
        plain = await asyncio.wait_for(asyncio.gather(queue.get("bicubic", lambda: b"bicubic", model=False),
                                                      queue.get("bicubic", lambda: b"again", model=False)), 10)
        assert not rendering.done()
        release.set()
        answers = [*plain, await rendering]
        await queue.stop()
        return queue, answers

    queue, answers = asyncio.run(scenario())
    assert answers == [b"bicubic", b"bicubic", b"liif"]
    assert (queue.stats.rendered, queue.stats.shared) == (2, 1)


def test_errors_reach_every_waiting_client():
    def broken():
        raise ValueError("bad request")

    async def scenario():
        queue = RenderQueue(max_bytes=1000)
        await queue.start()
        results = await asyncio.gather(queue.get("x", broken), queue.get("x", broken), return_exceptions=True)
        await queue.stop()
        return results

    results = asyncio.run(scenario())
    assert all(isinstance(r, ValueError) for r in results)


def test_stopping_answers_every_waiting_client_and_ends_the_render_in_progress():
    """The server's shutdown (Ctrl-C) waited for the render in progress, minutes for a large one, and left the
    clients of queued renders waiting for ever. Stopping now answers them all 503 at once, and the render ends at
    its next torch module call; the hook that ends it is gone afterwards."""
    layer = torch.nn.Linear(4, 4)
    started, calls = threading.Event(), []

    def long_render():  # a render's module calls, for 20 s unless stopped
        started.set()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            layer(torch.ones(1, 4))
            time.sleep(0.01)
        return b"rendered"

    async def scenario():
        queue = RenderQueue(max_bytes=1000)
        await queue.start()
        rendering = asyncio.create_task(queue.get("long", long_render))
        queued = asyncio.create_task(queue.get("next", lambda: calls.append("next") or b"next"))
        await asyncio.to_thread(started.wait, 10)
        began = time.monotonic()
        await asyncio.wait_for(queue.stop(), 20)
        took = time.monotonic() - began
        answers = await asyncio.wait_for(asyncio.gather(rendering, queued, queue.get("late", lambda: b"late"),
                                                        return_exceptions=True), 5)
        return queue, took, answers

    queue, took, answers = asyncio.run(scenario())
    assert took < 5, f"stopping waited {took:.1f} s for the render"
    assert all(isinstance(a, IIIFError) and a.status == 503 and str(a) == "the server is stopping" for a in answers)
    assert not queue.render_thread.is_alive() and calls == []
    assert not torch.nn.modules.module._global_forward_pre_hooks  # modules run as before
