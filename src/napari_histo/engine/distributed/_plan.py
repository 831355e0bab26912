"""Which cluster a ``--scheduler``/``--gpus`` pair asks for, decided without starting anything.

Pure (no dask, no torch): the visible GPUs are passed in, so the worker -> GPU mapping is
unit-tested on machines without one. A pinned worker sees only its own GPU (its
``CUDA_VISIBLE_DEVICES``), so it runs the model on ``cuda`` (= ``cuda:0`` in its view).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from napari_histo.core.errors import ConfigError

__all__ = ["ClusterPlan", "assign_gpus", "parse_gpus", "plan_cluster"]

#: devices for which a local cluster pins its workers to GPUs when --gpus is not given
_GPU_DEVICES = ("auto", "cuda")


@dataclass(frozen=True)
class ClusterPlan:
    """A local cluster to start (``address`` None) or an existing one to join.

    ``worker_gpus[i]`` is worker i's ``CUDA_VISIBLE_DEVICES`` (None: not pinned);
    ``dask_cuda``: start it with dask-cuda's LocalCUDACluster (one worker per GPU);
    ``worker_device``: the device name each worker runs the model on.
    """

    address: str | None
    n_workers: int
    worker_gpus: tuple[str | None, ...]
    dask_cuda: bool
    worker_device: str

    @property
    def pinned(self) -> bool:
        """Whether every worker has a GPU of its own (or shares one round-robin)."""
        return any(g is not None for g in self.worker_gpus)


def parse_gpus(spec: str | int | None, available: int, device: str = "auto") -> int:
    """How many GPUs ``--gpus`` asks for: N, ``all``, ``none``/0, or None (= all when
    ``device`` is auto/cuda and GPUs are visible, else none).

    Raises
    ------
    ConfigError
        Not a count, more GPUs than visible, or GPUs asked for with a cpu/mps/cuda:N device.
    """
    if spec is None or (isinstance(spec, str) and spec.strip().lower() == "auto"):
        return available if device.lower() in _GPU_DEVICES else 0
    text = str(spec).strip().lower()
    if text in ("none", "0"):
        return 0
    if text == "all":
        n = available
    else:
        try:
            n = int(text)
        except ValueError:
            raise ConfigError(f"--gpus must be a number, 'all' or 'none', got {spec!r}") from None
        if n < 0:
            raise ConfigError(f"--gpus must be >= 0, got {n}")
    if device.lower() not in _GPU_DEVICES:
        raise ConfigError(f"--gpus pins one GPU per worker; it needs --device auto or cuda, "
                          f"not {device!r}")
    if available == 0:
        raise ConfigError(f"--gpus {spec}: no CUDA GPU is visible on this machine; "
                          "leave --gpus out to run on the CPU")
    if n > available:
        raise ConfigError(f"--gpus {n}: only {available} CUDA GPU(s) are visible")
    return n


def assign_gpus(n_workers: int, gpu_ids: Sequence[str]) -> tuple[str | None, ...]:
    """Worker i -> GPU ``gpu_ids[i % len(gpu_ids)]`` (round-robin); no GPUs -> all None."""
    if not gpu_ids:
        return (None,) * n_workers
    return tuple(gpu_ids[i % len(gpu_ids)] for i in range(n_workers))


def plan_cluster(scheduler: str, gpus: str | int | None = None, *, device: str = "auto",
                 gpu_ids: Sequence[str] = (), cpus: int = 2,
                 dask_cuda: bool = False) -> ClusterPlan:
    """The cluster for ``scheduler`` (``local``, ``local:N`` or an address).

    ``local`` without N starts one worker per chosen GPU, else ``cpus // 2`` workers;
    ``local:N`` starts N, sharing the chosen GPUs round-robin. dask-cuda is used when it is
    importable (``dask_cuda``) and there is exactly one worker per GPU. An address joins an
    existing cluster whose workers were started (and pinned) by the user.
    """
    text = (scheduler or "").strip()
    if not text:
        raise ConfigError("--scheduler needs local, local:N or a dask scheduler address")
    if not text.startswith("local"):
        if gpus is not None and str(gpus).strip().lower() not in ("auto", "none", "0"):
            raise ConfigError("--gpus applies to a local cluster; on an existing cluster start "
                              "one worker per GPU (see 'Cluster inference' in the README)")
        return ClusterPlan(text, 0, (), False, device)
    head, sep, count = text.partition(":")
    if head != "local":
        raise ConfigError(f"bad scheduler {scheduler!r}; use local, local:N or an address "
                          "such as tcp://HOST:8786")
    n: int | None = None
    if sep:
        try:
            n = int(count)
        except ValueError:
            raise ConfigError(f"bad scheduler {scheduler!r}; use local:N (N workers) or an "
                              "address") from None
        if n < 1:
            raise ConfigError("local:N needs N >= 1 workers")
    chosen = list(gpu_ids[: parse_gpus(gpus, len(gpu_ids), device)])
    workers = n if n is not None else (len(chosen) or max(1, cpus // 2))
    pinned = assign_gpus(workers, chosen)
    return ClusterPlan(None, workers, pinned, bool(dask_cuda and chosen and
                                                   workers == len(chosen)),
                       "cuda" if chosen else device)
