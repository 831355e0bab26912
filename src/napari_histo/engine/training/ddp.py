"""Distributed data-parallel training: one process (rank) per device, same config in each.

How a run is split, so N ranks learn what one process would:

* **Global batch kept.** ``batch_size`` is the global batch. Every rank draws the epoch's
  index batches from the same seed (balanced and grouped sampling included), so all ranks
  hold the same list; each optimiser step, rank ``r`` takes ``batch[r::N]`` (the batch
  padded with its own first indices to a multiple of N, like ``DistributedSampler``).
  DistributedDataParallel averages the gradients, which for a per-sample mean loss equals
  the one-process gradient of the whole batch. Batch norm uses SyncBatchNorm on CUDA; on
  CPU (gloo has no SyncBatchNorm) each rank normalises by its own shard's statistics.
* **Rank 0 owns the outputs.** It alone validates (the full validation set, so metrics and
  their intervals equal a one-process run's), writes checkpoints, metrics, plots and
  messages; the others wait on a broadcast of its decisions (best epoch, stop reason, the
  clock of a time-limited run) so every rank stops together.
* **Failures are clean.** A collective that fails because another rank died is raised as
  :class:`DistributedError` (one line; resume with ``--resume``); a process started by
  ``train --nproc`` exits when its launcher is gone.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from napari_histo.core import settings
from napari_histo.core.errors import ConfigError, HistoError
from napari_histo.engine.metrics import MetricAccumulator

T = TypeVar("T")

#: how long a rank waits in a collective (e.g. for rank 0's validation) before failing
DEFAULT_TIMEOUT_S = 1800.0


class DistributedError(HistoError):
    """Another process of a distributed training run stopped; the run can be resumed."""


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in a distributed run (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    timeout_s: float = DEFAULT_TIMEOUT_S

    @property
    def active(self) -> bool:
        """True with more than one rank."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes files and reports."""
        return self.rank == 0


def from_env(timeout_s: float = DEFAULT_TIMEOUT_S) -> DistContext:
    """The context torchrun (or ``train --nproc``) set in RANK/WORLD_SIZE/LOCAL_RANK."""
    env = settings.distributed_env()
    if "WORLD_SIZE" not in env:
        return DistContext(timeout_s=timeout_s)
    try:
        world = int(env["WORLD_SIZE"])
        rank = int(env.get("RANK", "0"))
        local = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise ConfigError("RANK, WORLD_SIZE and LOCAL_RANK must be whole numbers") from None
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"RANK={rank} does not fit WORLD_SIZE={world}")
    if world > 1 and not {"MASTER_ADDR", "MASTER_PORT"} <= env.keys():
        raise ConfigError("a distributed run needs MASTER_ADDR and MASTER_PORT (torchrun "
                          "sets them)")
    return DistContext(rank, world, local, timeout_s)


def rank_device(ctx: DistContext, device: torch.device) -> torch.device:
    """cuda:LOCAL_RANK for a CUDA run with several ranks (one GPU each), else ``device``."""
    if ctx.active and device.type == "cuda":
        n = torch.cuda.device_count()
        if ctx.local_rank >= n:
            raise ConfigError(f"rank {ctx.rank} needs GPU {ctx.local_rank} but {n} are visible;"
                              " start at most one process per GPU")
        torch.cuda.set_device(ctx.local_rank)
        return torch.device("cuda", ctx.local_rank)
    return device


@contextlib.contextmanager
def process_group(ctx: DistContext, device: torch.device) -> Iterator[None]:
    """Join the run's process group (NCCL on CUDA, gloo on CPU) for the ``with`` body."""
    if not ctx.active or torch.distributed.is_initialized():
        yield
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    _watch_launcher()
    try:
        torch.distributed.init_process_group(
            backend, rank=ctx.rank, world_size=ctx.world_size,
            timeout=datetime.timedelta(seconds=ctx.timeout_s))
    except (RuntimeError, ValueError) as err:
        raise DistributedError(f"rank {ctx.rank} could not join the other training "
                               f"processes: {_first_line(err)}") from None
    try:
        try:
            yield
        except RuntimeError as err:  # e.g. DDP's gradient all-reduce when a peer died
            if not _is_comm_error(err):
                raise
            raise DistributedError(
                f"rank {ctx.rank}: lost the other training processes (one stopped or was "
                f"killed: {_first_line(err)}); resume from last.pt with --resume") from None
        # all ranks leave together: a rank tearing gloo down while a peer still talks to it
        # aborts that peer ("terminate called without an active exception")
        collective(ctx, "the end of training", torch.distributed.barrier)
    finally:
        with contextlib.suppress(Exception):
            torch.distributed.destroy_process_group()


def _is_comm_error(err: BaseException) -> bool:
    """True for a failed collective (gloo/NCCL transport, timeouts), not a bug in training."""
    dist_error = getattr(torch.distributed, "DistError", ())
    text = str(err).lower()
    return isinstance(err, dist_error) or any(k in text for k in (
        "gloo", "nccl", "connection closed", "connection reset", "broken pipe", "timed out"))


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__


def collective(ctx: DistContext, what: str, fn: Callable[[], T]) -> T:
    """Run a collective; a peer that died becomes one :class:`DistributedError` line."""
    try:
        return fn()
    except RuntimeError as err:  # DistBackendError/DistNetworkError subclass RuntimeError
        raise DistributedError(
            f"rank {ctx.rank}: lost the other training processes during {what} (one stopped "
            f"or was killed: {_first_line(err)}); resume from last.pt with --resume") from None


def broadcast(ctx: DistContext, obj: T, what: str) -> T:
    """Rank 0's ``obj`` on every rank (``obj`` itself when not distributed)."""
    if not ctx.active:
        return obj
    box = [obj if ctx.is_main else None]
    collective(ctx, what, lambda: torch.distributed.broadcast_object_list(box, src=0))
    return box[0]  # type: ignore[return-value]


def shard(batch: Sequence[int], ctx: DistContext) -> list[int]:
    """This rank's share of one global batch: padded to a multiple of N, every N-th index."""
    items = list(batch)
    if not ctx.active:
        return items
    n = ctx.world_size
    pad = (-len(items)) % n
    items += [items[i % len(items)] for i in range(pad)]
    return items[ctx.rank::n]


def check_batch(ctx: DistContext, batch_size: int) -> None:
    """The global batch must give every rank at least 2 samples (batch norm needs them)."""
    if ctx.active and batch_size < 2 * ctx.world_size:
        raise ConfigError(f"batch_size {batch_size} is the global batch, split over "
                          f"{ctx.world_size} processes: give at least {2 * ctx.world_size}")


def wrap_model(model: torch.nn.Module, ctx: DistContext, device: torch.device,
               ) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(module to train and save, module to call forward on): DDP around it when distributed.

    On CUDA batch norms become SyncBatchNorm first so statistics cover the global batch.
    """
    if not ctx.active:
        return model, model
    if device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    ddp = collective(ctx, "start", lambda: torch.nn.parallel.DistributedDataParallel(
        model, device_ids=ids))
    return model, ddp


def merge_accumulators(accs: Sequence[MetricAccumulator]) -> MetricAccumulator:
    """One accumulator holding the counts, losses and ROC scores of all ``accs``."""
    out = accs[0]
    for a in accs[1:]:
        out.cm += a.cm
        out.loss_sum += a.loss_sum
        out.loss_n += a.loss_n
        out.no_roc = out.no_roc or a.no_roc
        if a.roc_acc.exact:
            s, t = a.roc_acc.scores()
            if s.size:
                out.roc_acc.update(s, t)
        else:
            out.roc_acc.hist.pos += a.roc_acc.hist.pos
            out.roc_acc.hist.neg += a.roc_acc.hist.neg
            out.roc_acc.n += a.roc_acc.n
            out.roc_acc._scores, out.roc_acc._truth = [], []
    return out


def gather_accumulator(ctx: DistContext, acc: MetricAccumulator) -> MetricAccumulator:
    """The training metrics of all ranks merged (on every rank), in rank order."""
    if not ctx.active:
        return acc
    parts: list[Any] = [None] * ctx.world_size
    collective(ctx, "gathering training metrics",
               lambda: torch.distributed.all_gather_object(parts, acc))
    return merge_accumulators(parts)


def shared_clock(ctx: DistContext, elapsed: float) -> float:
    """Rank 0's elapsed seconds on every rank, so time-paced schedules and time limits agree
    (ranks whose learning rates or last steps differed would drift apart or hang)."""
    if not ctx.active:
        return elapsed
    return float(broadcast(ctx, float(elapsed), "a training step"))


def kill_hook(ctx: DistContext, step: int) -> None:
    """Test hook: ``NAPARI_HISTO_TEST_KILL_RANK=R:S`` makes rank R exit abruptly at step S."""
    hook = settings.kill_rank_hook()
    if hook is not None and ctx.active and hook == (ctx.rank, step):
        os._exit(17)


def seed_offset(ctx: DistContext) -> tuple[int, ...]:
    """Extra RNG key for this rank's augmentation (none on rank 0, as in one process)."""
    return (ctx.rank,) if ctx.rank else ()


_watching = threading.Event()


def _watch_launcher() -> None:
    """Exit when the ``train --nproc`` launcher that started this process is gone (killed),
    so no orphan keeps a GPU or a port."""
    pid = settings.launcher_pid()
    if pid is None or _watching.is_set():
        return
    _watching.set()

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != pid:
                os._exit(1)

    threading.Thread(target=watch, name="napari-histo-launcher-watch", daemon=True).start()

