"""``cvae-seg train --nproc-per-node N``: several training processes on this machine.

torchrun's launcher prints its own traceback (a ChildFailedError) whenever a worker exits
with a non-zero status, even when the worker only reported a typo in a config key. This
launcher checks the config before it starts any worker, then starts the workers through the
same machinery torchrun uses (`torch.distributed.launcher.api.elastic_launch`, a standalone
c10d rendezvous on a free port), and turns a worker's documented exit status (2: user error,
printed once by rank 0; 1: a non-finite stop) into its own. A worker that fails any other
way is a bug: its failure propagates with torch's summary.
"""

from __future__ import annotations

import logging
import os
import sys
import uuid
from collections.abc import Sequence

__all__ = ["launch_workers", "without_launch_flag"]

# the statuses a worker documents (cvae_seg.cli.main); anything else is a crash
_DOCUMENTED_STATUSES = (1, 2)


def without_launch_flag(argv: Sequence[str]) -> list[str]:
    """``argv`` without ``--nproc-per-node N`` (or ``=N``): what each worker runs."""
    kept, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item == "--nproc-per-node":
            skip = True
        elif not item.startswith("--nproc-per-node="):
            kept.append(item)
    return kept


def launch_workers(worker_argv: Sequence[str], processes: int) -> int:
    """Run ``python -m cvae_seg.cli *worker_argv`` in ``processes`` processes; exit status."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=processes,
        run_id=str(uuid.uuid4()),
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=0,
    )
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # torchrun's default for several processes
    agent_log = logging.getLogger("torch.distributed.elastic")
    level = agent_log.level
    agent_log.setLevel(logging.CRITICAL)  # the workers speak for themselves
    try:
        elastic_launch(config, sys.executable)("-m", "cvae_seg.cli", *worker_argv)
    except ChildFailedError as error:
        _, first = error.get_first_failure()
        if first.exitcode in _DOCUMENTED_STATUSES:
            return first.exitcode
        raise
    finally:
        agent_log.setLevel(level)
    return 0
