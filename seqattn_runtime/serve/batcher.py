"""Dynamic batching: requests that arrive within a few milliseconds are decoded as one batch."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from ..options import SearchOptions


@dataclass
class _Job:
    texts: list[str]
    options: SearchOptions
    attention: bool
    prefixes: list[str] | None
    future: asyncio.Future = field(repr=False)


class Batcher:
    """Collects jobs for up to max_wait_s (or max_batch texts), then runs one model call per
    group of jobs with the same search options (and with target prefixes or without), in a worker thread so
    the event loop stays free."""

    def __init__(self, decode: Callable[[list[str], SearchOptions, bool, list[str] | None],
                                        list[list]],
                 max_batch: int = 32, max_wait_s: float = 0.005):
        self.decode, self.max_batch, self.max_wait_s = decode, max_batch, max_wait_s
        self.queue: asyncio.Queue[_Job] | None = None
        self.task: asyncio.Task | None = None
        self.model_calls = 0

    async def submit(self, texts: list[str], options: SearchOptions, attention: bool,
                     prefixes: list[str] | None = None) -> list[list]:
        """Return the n-best translations of texts (each starting with its prefix, when given), decoded together
        with concurrent requests."""
        if self.task is None or self.task.done():
            self.queue = asyncio.Queue()
            self.task = asyncio.get_running_loop().create_task(self._run())
        job = _Job(texts, options, attention, prefixes, asyncio.get_running_loop().create_future())
        await self.queue.put(job)
        return await job.future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self.queue.get()]
            size = len(jobs[0].texts)
            deadline = loop.time() + self.max_wait_s
            while size < self.max_batch:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self.queue.get(), timeout)
                except asyncio.TimeoutError:
                    break
                jobs.append(job)
                size += len(job.texts)
            groups: dict[tuple, list[_Job]] = {}
            for job in jobs:
                key = (job.options.beam, job.options.nbest, job.options.alpha, job.options.coverage_penalty,
                       job.options.alternatives, job.options.stopping, job.options.patience, job.options.shortlist,
                       job.attention, job.prefixes is None)
                groups.setdefault(key, []).append(job)
            for group in groups.values():
                texts = [t for job in group for t in job.texts]
                prefixes = None if group[0].prefixes is None else [p for job in group for p in job.prefixes]
                try:
                    self.model_calls += 1
                    results = await loop.run_in_executor(None, self.decode, texts, group[0].options,
                                                         group[0].attention, prefixes)
                except Exception as e:  # hand the failure to every waiting request, keep serving
                    for job in group:
                        if not job.future.done():
                            job.future.set_exception(e)
                    continue
                start = 0
                for job in group:
                    if not job.future.done():
                        job.future.set_result(results[start : start + len(job.texts)])
                    start += len(job.texts)
