"""Whole-slide inference on a dask.distributed cluster: one GPU per worker, cohort resume.

- :mod:`._plan`: which cluster ``--scheduler``/``--gpus`` ask for (pure: worker -> GPU map);
- :mod:`._cluster`: start a local cluster (pinned workers) or join an address, with timeouts;
- :mod:`._predict`: plan slides on the client, spread block groups over the workers.

``scheduler`` is a dask scheduler address (``tcp://host:8786``), ``local`` (one worker per
GPU, or half the CPUs) or ``local:N`` for a local cluster of N worker processes.
"""

from napari_histo.engine.distributed._cluster import cluster_client, open_cluster
from napari_histo.engine.distributed._plan import (
    ClusterPlan,
    assign_gpus,
    parse_gpus,
    plan_cluster,
)
from napari_histo.engine.distributed._predict import predict_distributed

__all__ = ["ClusterPlan", "assign_gpus", "cluster_client", "open_cluster", "parse_gpus",
           "plan_cluster", "predict_distributed"]
