"""Worker -> GPU mapping of a local cluster (pure), and the pinning reaching real workers."""

from __future__ import annotations

import os

import pytest

from napari_histo.core.errors import ConfigError
from napari_histo.engine.distributed import ClusterPlan, assign_gpus, parse_gpus, plan_cluster

IDS = ("GPU-a", "GPU-b", "GPU-c", "GPU-d")


def test_assign_gpus_round_robin() -> None:
    assert assign_gpus(3, []) == (None, None, None)
    assert assign_gpus(2, IDS) == ("GPU-a", "GPU-b")
    assert assign_gpus(5, IDS[:2]) == ("GPU-a", "GPU-b", "GPU-a", "GPU-b", "GPU-a")


def test_parse_gpus() -> None:
    assert parse_gpus(None, 4) == 4  # auto device: every visible GPU
    assert parse_gpus(None, 4, "cpu") == 0  # a CPU run keeps today's behaviour
    assert parse_gpus(None, 0) == 0
    assert parse_gpus("all", 3) == 3 and parse_gpus("2", 3) == 2 and parse_gpus("none", 3) == 0
    for spec, avail, dev, words in [("5", 4, "auto", "only 4"), ("1", 0, "auto", "no CUDA"),
                                    ("two", 2, "auto", "a number"), ("2", 2, "cpu", "device"),
                                    ("-1", 2, "auto", ">= 0"), ("1", 2, "cuda:1", "device")]:
        with pytest.raises(ConfigError, match=words):
            parse_gpus(spec, avail, dev)


def test_plan_cluster() -> None:
    one_per_gpu = plan_cluster("local", "all", gpu_ids=IDS, dask_cuda=True)
    assert one_per_gpu == ClusterPlan(None, 4, IDS, True, "cuda") and one_per_gpu.pinned
    two = plan_cluster("local", 2, gpu_ids=IDS)
    assert two.worker_gpus == IDS[:2] and not two.dask_cuda and two.worker_device == "cuda"
    shared = plan_cluster("local:4", 2, gpu_ids=IDS, dask_cuda=True)  # 2 workers per GPU
    assert shared.worker_gpus == ("GPU-a", "GPU-b", "GPU-a", "GPU-b") and not shared.dask_cuda
    cpu = plan_cluster("local:2", device="cpu", gpu_ids=IDS)
    assert cpu == ClusterPlan(None, 2, (None, None), False, "cpu") and not cpu.pinned
    assert plan_cluster("local", gpu_ids=(), cpus=8).n_workers == 4
    remote = plan_cluster("tcp://10.0.0.1:8786", gpu_ids=IDS)
    assert remote.address == "tcp://10.0.0.1:8786" and not remote.pinned
    for sched, gpus, words in [("local:0", None, ">= 1"), ("local:x", None, "local:N"),
                               ("locale", None, "bad scheduler"), ("", None, "needs"),
                               ("tcp://h:1", "2", "existing cluster")]:
        with pytest.raises(ConfigError, match=words):
            plan_cluster(sched, gpus, gpu_ids=IDS)


@pytest.mark.slow
def test_pinned_local_workers_each_see_their_own_gpu() -> None:
    """Without dask-cuda every Nanny starts its worker with its own CUDA_VISIBLE_DEVICES
    (checked on a CPU machine: the variable is what a GPU machine's torch would read)."""
    from napari_histo.engine.distributed import open_cluster

    plan = plan_cluster("local", "all", gpu_ids=("GPU-x", "GPU-y"))
    with open_cluster(plan) as client:
        seen = client.run(lambda: os.environ.get("CUDA_VISIBLE_DEVICES"))
        threads = client.nthreads()
    assert sorted(seen.values()) == ["GPU-x", "GPU-y"]
    assert sorted(threads.values()) == [1, 1]
