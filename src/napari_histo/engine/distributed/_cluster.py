"""Start (or join) the dask cluster a :class:`ClusterPlan` describes, and hand back a Client.

GPU pinning: dask-cuda's LocalCUDACluster when it is importable and there is one worker per
GPU; otherwise a SpecCluster of Nanny workers, each started with its own
``CUDA_VISIBLE_DEVICES`` (the Nanny sets it before the worker process imports torch).
Joining an address waits ``timeout`` s for the scheduler and for a first worker, so an
unreachable or empty cluster is one ConfigError line instead of a hang.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from napari_histo.core.errors import ConfigError
from napari_histo.engine.distributed._plan import ClusterPlan

__all__ = ["DEFAULT_TIMEOUT_S", "cluster_client", "open_cluster", "start_local_cluster"]

#: seconds to reach a scheduler, and again to see its first worker
DEFAULT_TIMEOUT_S = 20.0
_QUIET = 40  # logging.ERROR: dask's own chatter would break the CLI's one-line promise


def dask_cuda_available() -> bool:
    """Whether dask-cuda (LocalCUDACluster) can be imported."""
    import importlib.util

    return importlib.util.find_spec("dask_cuda") is not None


def start_local_cluster(plan: ClusterPlan) -> Any:
    """A local cluster of ``plan.n_workers`` single-threaded worker processes."""
    from distributed import LocalCluster

    if plan.dask_cuda:
        import importlib

        cuda_cluster = importlib.import_module("dask_cuda").LocalCUDACluster  # optional extra
        return cuda_cluster(CUDA_VISIBLE_DEVICES=",".join(str(g) for g in plan.worker_gpus),
                                threads_per_worker=1, dashboard_address=None,
                                silence_logs=_QUIET)
    if not plan.pinned:
        return LocalCluster(n_workers=plan.n_workers, threads_per_worker=1, processes=True,
                            dashboard_address=None, silence_logs=_QUIET)
    from distributed import Nanny, Scheduler, SpecCluster
    from distributed.system import MEMORY_LIMIT

    memory = int(MEMORY_LIMIT / plan.n_workers)
    workers = {i: {"cls": Nanny, "options": {
        "nthreads": 1, "host": "127.0.0.1", "memory_limit": memory, "silence_logs": _QUIET,
        "env": {"CUDA_VISIBLE_DEVICES": str(gpu)}}}
        for i, gpu in enumerate(plan.worker_gpus)}
    scheduler = {"cls": Scheduler, "options": {"host": "127.0.0.1",
                                               "dashboard_address": None}}
    return SpecCluster(workers=workers, scheduler=scheduler, silence_logs=_QUIET)


@contextlib.contextmanager
def open_cluster(plan: ClusterPlan, timeout: float = DEFAULT_TIMEOUT_S) -> Iterator[Any]:
    """A Client of the planned cluster; a local one is stopped on exit."""
    try:
        from distributed import Client
    except ImportError as err:  # pragma: no cover - distributed is a dependency
        raise ConfigError("--scheduler needs the 'distributed' package") from err
    if plan.address is None:
        cluster = start_local_cluster(plan)
        try:
            client = Client(cluster)
            try:
                yield client
            finally:
                client.close()
        finally:
            cluster.close()
        return
    address = plan.address
    try:
        client = Client(address, timeout=f"{timeout}s")
    except (OSError, ValueError):  # TimeoutError is an OSError; ValueError: bad address
        raise ConfigError(f"cannot reach the dask scheduler at {address} within {timeout:g} s; "
                          "start it with 'dask scheduler' or check the address") from None
    try:
        try:
            client.wait_for_workers(1, timeout=timeout)
        except (OSError, TimeoutError):
            raise ConfigError(f"the dask scheduler at {address} has no workers (waited "
                              f"{timeout:g} s); start some with 'dask worker {address}'") from None
        yield client
    finally:
        client.close()


@contextlib.contextmanager
def cluster_client(scheduler: str, gpus: str | int | None = None, *, device: str = "auto",
                   timeout: float = DEFAULT_TIMEOUT_S) -> Iterator[Any]:
    """A dask Client for ``scheduler`` (``local[:N]`` starts and stops a local cluster)."""
    with open_cluster(make_plan(scheduler, gpus, device), timeout) as client:
        yield client


def make_plan(scheduler: str, gpus: str | int | None, device: str) -> ClusterPlan:
    """:func:`plan_cluster` with this machine's GPUs, CPUs and dask-cuda."""
    from napari_histo.engine.distributed._plan import parse_gpus, plan_cluster

    local = scheduler.strip().startswith("local")
    wants = local and (parse_gpus(gpus, 1, device) > 0 if gpus is None else
                       str(gpus).strip().lower() not in ("none", "0"))
    ids: list[str] = []
    if wants:
        from napari_histo.engine.devices import visible_gpu_ids

        ids = visible_gpu_ids()
    return plan_cluster(scheduler, gpus, device=device, gpu_ids=ids,
                        cpus=os.cpu_count() or 2, dask_cuda=bool(ids) and dask_cuda_available())
