"""The streaming loop shared by every prediction: read ahead, batch, run, blend, write.

Reader threads decode the next blocks while the model runs on the current batch; blending
and writing happen on writer threads, so the main thread only stacks tiles and calls the
model. Batches may span blocks (the device stays full). The loop is a generator: it yields a
Progress per batch and one per written block (with the block's box in output pixels), and
``close()`` cancels it between batches, waiting only for writes already under way.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Generator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_histo.core.errors import CorruptDataError
from napari_histo.core.progress import Event, Message, Progress
from napari_histo.engine.inference._plan import Plan
from napari_histo.engine.inference.writer import release_memory

__all__ = ["RunStats", "run_blocks"]

Box = tuple[int, int, int, int]


@dataclass
class RunStats:
    """What a run did: tile counts, failed blocks, and where the time went."""

    total_tiles: int = 0
    skipped_tiles: int = 0
    computed_tiles: int = 0
    resumed_tiles: int = 0
    #: tiles lost to failures: whole blocks that could not be read plus slide tiles
    #: reported undecodable while reading (see ``failed_block_tiles``)
    failed_tiles: int = 0
    failed_boxes: list[Box] = field(default_factory=list)
    #: the part of ``failed_tiles`` from blocks whose read raised (their tiles are 0)
    failed_block_tiles: int = 0
    read_warnings: list[str] = field(default_factory=list)
    model_s: float = 0.0
    wait_read_s: float = 0.0
    wall_s: float = 0.0


class _DecodeWarnings:
    """Collects the readers' "tile could not be decoded" warnings (from any thread).

    The io readers replace a corrupt tile by white and ``warnings.warn`` about it; during a
    run those warnings become Message events and count as failed tiles instead of going to
    stderr once. Other warnings pass through unchanged.
    """

    KEY = "could not be decoded"

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.messages: list[str] = []
        self._cm = warnings.catch_warnings()

    def __enter__(self) -> _DecodeWarnings:
        self._cm.__enter__()
        warnings.filterwarnings("always", message=f".*{self.KEY}")
        self._orig = warnings.showwarning
        warnings.showwarning = self._hook
        return self

    def _hook(self, message: Any, category: Any, filename: str, lineno: int,
              file: Any = None, line: Any = None) -> None:
        if self.KEY in str(message):
            with self.lock:
                self.messages.append(str(message))
        else:
            self._orig(message, category, filename, lineno, file, line)

    def pop(self) -> list[str]:
        with self.lock:
            out, self.messages = self.messages, []
        return out

    def __exit__(self, *exc: Any) -> None:
        self._cm.__exit__(*exc)


@dataclass
class _Job:
    block: tuple[int, int]
    offsets: list[tuple[int, int]]
    probs: np.ndarray | None = None
    remaining: int = 0


def plan_jobs(plan: Plan, order: list[int], skip: Callable[[Box], bool] | None,
              done: set[tuple[int, int]], stats: RunStats) -> list[_Job]:
    """Blocks still to compute, with their tissue tiles; counts skipped and resumed tiles."""
    blocks = plan.blocks()
    jobs = []
    for i in order:
        b = blocks[i]
        tiles = plan.tiles(b)
        stats.total_tiles += len(tiles)
        if b in done:
            stats.resumed_tiles += len(tiles)
            continue
        active = [off for off, core in tiles if skip is None or not skip(core)]
        stats.skipped_tiles += len(tiles) - len(active)
        if active:
            jobs.append(_Job(b, active, remaining=len(active)))
    return jobs


def run_blocks(plan: Plan, source: Any, runner: Any, sink: Any, jobs: list[_Job],
               stats: RunStats, *, readers: int = 4, desc: str = "predict",
               ) -> Generator[Event, None, RunStats]:
    """Compute ``jobs`` and write them to ``sink``; see the module docstring.

    Each turn either takes the next block read (:meth:`_BlockPipeline.take_read`) while the
    batch is not full, or runs the model on a batch (:meth:`_BlockPipeline.run_batch`).
    """
    t_start = time.perf_counter()
    pipe = _BlockPipeline(plan, source, runner, sink, jobs, stats, readers)
    try:
        pipe.refill()
        while pipe.reads or pipe.buf:
            if pipe.reads and len(pipe.buf) < pipe.bs:
                yield from pipe.take_read()
                continue
            yield from pipe.run_batch(desc)
        yield from pipe.drain_writes(0)
        stats.wall_s = time.perf_counter() - t_start
        return stats
    finally:
        pipe.close()


class _BlockPipeline:
    """One :func:`run_blocks` call: reader and writer pools, their queues and the tile buffer."""

    def __init__(self, plan: Plan, source: Any, runner: Any, sink: Any, jobs: list[_Job],
                 stats: RunStats, readers: int) -> None:
        self.plan, self.source, self.runner, self.sink, self.stats = (
            plan, source, runner, sink, stats)
        self.bs = runner.batch_size
        self.pool = ThreadPoolExecutor(max_workers=readers, thread_name_prefix="histo-read")
        self.writer = ThreadPoolExecutor(max_workers=2, thread_name_prefix="histo-write")
        # blocks read ahead: enough for two batches and one per reader, no more (flat memory)
        self.prefetch = max(2, readers, -(-2 * self.bs // max(1, len(jobs[0].offsets)))
                            if jobs else 2)
        self.reads: deque[tuple[_Job, Future[Any]]] = deque()
        self.writes: deque[tuple[_Job, Future[Any]]] = deque()
        self.buf: deque[tuple[_Job, int, np.ndarray]] = deque()
        self.job_iter = iter(jobs)
        self.done = stats.skipped_tiles + stats.resumed_tiles
        self.total = stats.total_tiles
        self.written = 0
        self.recorder = _DecodeWarnings().__enter__()

    def close(self) -> None:
        """Cancel reads not started, wait for writes under way, restore warnings."""
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.writer.shutdown(wait=True)
        self.recorder.__exit__(None, None, None)

    def _read(self, job: _Job) -> np.ndarray:
        region = self.source.read(self.plan.read_box(job.block))
        return self.plan.extract(region, job.offsets)

    def _finish(self, job: _Job) -> None:
        box = self.plan.block_box(job.block)
        self.sink.write(job.block, box, self.plan.assemble(job.block, job.offsets, job.probs))
        job.probs = None

    def refill(self) -> None:
        """Submit reads until ``prefetch`` blocks are in flight (or no job is left)."""
        while len(self.reads) < self.prefetch:
            job = next(self.job_iter, None)
            if job is None:
                return
            self.reads.append((job, self.pool.submit(self._read, job)))

    def drain_writes(self, keep: int) -> Generator[Event, None, None]:
        """Collect finished writes, one Progress (with the block's box) each; block until at
        most ``keep`` are pending."""
        events: list[Event] = []
        writes = self.writes
        while writes and (len(writes) > keep or writes[0][1].done()):
            job, fut = writes.popleft()
            fut.result()
            self.written += 1
            release_memory()
            y0, x0, y1, x1 = self.plan.block_box(job.block)
            events.append(Progress(self.done, self.total, "tile",
                                   {"y0": y0, "x0": x0, "y1": y1, "x1": x1}))
        yield from events

    def take_read(self) -> Generator[Event, None, None]:
        """The oldest block read: its tiles into the buffer, or a failed block (written as 0)."""
        stats, plan = self.stats, self.plan
        job, fut = self.reads.popleft()
        t0 = time.perf_counter()
        try:
            tiles = fut.result()
        except CorruptDataError as err:
            stats.failed_tiles += len(job.offsets)
            stats.failed_block_tiles += len(job.offsets)
            stats.failed_boxes.append(plan.block_box(job.block))
            self.done += len(job.offsets)
            yield Message(f"{err}; block {plan.block_box(job.block)} (output px) "
                          "written as 0, the rest is predicted", "warning")
            self.refill()
            return
        finally:
            stats.wait_read_s += time.perf_counter() - t0
        for text in self.recorder.pop():
            stats.failed_tiles += 1
            stats.read_warnings.append(text)
            yield Message(f"{text}; predicted as such, the rest is unaffected", "warning")
        for k in range(tiles.shape[0]):
            self.buf.append((job, k, tiles[k]))
        self.refill()

    def run_batch(self, desc: str) -> Generator[Event, None, None]:
        """The model on up to ``bs`` buffered tiles; finished blocks go to the writers."""
        stats = self.stats
        n = min(self.bs, len(self.buf))
        items = [self.buf.popleft() for _ in range(n)]
        batch = np.stack([t for _, _, t in items])
        t0 = time.perf_counter()
        probs = self.runner(batch)
        stats.model_s += time.perf_counter() - t0
        stats.computed_tiles += n
        self.done += n
        for (job, k, _), p in zip(items, probs, strict=False):
            if job.probs is None:
                job.probs = np.empty((len(job.offsets), *p.shape), dtype=np.float32)
            job.probs[k] = p
            job.remaining -= 1
            if job.remaining == 0:
                self.writes.append((job, self.writer.submit(self._finish, job)))
        yield Progress(self.done, self.total, desc)
        # the first block is reported as soon as it is written (the GUI's first tile on
        # screen); later ones as their writes finish, up to 4 in flight
        yield from self.drain_writes(0 if self.written == 0 else 4)
