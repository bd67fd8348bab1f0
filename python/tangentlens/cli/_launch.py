"""Several processes for one command, the way calc_metrics.py's ``--gpus`` does it: ``--gpus N`` (NCCL, one
CUDA device each) or ``--nproc N`` (gloo, CPU) starts N copies of the same command line with torchrun's
environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``); a process that finds
that environment (one of ours, or one torchrun started) joins the process group instead. The engines shard
their samples over the ranks (tangentlens._streaming), so the result equals a single process's at the same
per-process batch size."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence

from tangentlens.cli._common import UsageError

__all__ = ["add_process_options", "distributed_env", "init_distributed", "launch", "shutdown"]


def add_process_options(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--gpus",
        type=int,
        metavar="N",
        help="start N processes, one CUDA device each (NCCL), as calc_metrics.py --gpus",
    )
    group.add_argument(
        "--nproc", type=int, metavar="N", help="start N CPU processes (gloo); the result equals one process's"
    )


def distributed_env() -> tuple[int, int, int] | None:
    """``(rank, world_size, local_rank)`` when started by torchrun or by :func:`launch`, else None."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    return rank, world, int(os.environ.get("LOCAL_RANK", rank))


def wanted_processes(args: argparse.Namespace) -> int:
    n = args.gpus if args.gpus is not None else args.nproc
    if n is None:
        return 1
    option = "--gpus" if args.gpus is not None else "--nproc"
    if n < 1:
        raise UsageError(f"{option}: expected a number of processes >= 1, got {n}")
    if args.gpus is not None:
        import torch

        if not torch.cuda.is_available():
            raise UsageError("--gpus: no CUDA device is available; --nproc N starts CPU processes")
        if n > torch.cuda.device_count():
            raise UsageError(f"--gpus {n}: only {torch.cuda.device_count()} CUDA devices are available")
    return n


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(n: int, argv: Sequence[str]) -> int:
    """Run ``tangentlens <argv>`` in ``n`` processes with torchrun's environment; the worst exit status."""
    port = _free_port()
    procs = []
    for rank in range(n):
        env = dict(
            os.environ,
            RANK=str(rank),
            WORLD_SIZE=str(n),
            LOCAL_RANK=str(rank),
            LOCAL_WORLD_SIZE=str(n),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
        )
        # as torchrun: one thread per process unless told (N processes on all cores would oversubscribe
        # them, and convolutions round differently per thread count: same setting, same bits as torchrun)
        env.setdefault("OMP_NUM_THREADS", "1")
        procs.append(subprocess.Popen([sys.executable, "-m", "tangentlens", *argv], env=env))
    try:
        while True:
            codes = [p.poll() for p in procs]
            if all(c is not None for c in codes):
                break
            if any(c for c in codes if c is not None):
                # a rank failed outside the engines' gathered collectives (loading, arguments): the others
                # would wait for it in the next collective
                for p in procs:
                    if p.poll() is None:
                        p.terminate()
            time.sleep(0.2)
    except KeyboardInterrupt:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            p.wait()
        raise
    failed = [c for c in codes if c]
    return max((c if c > 0 else 1) for c in failed) if failed else 0


def init_distributed(args: argparse.Namespace) -> str | None:
    """Join the process group of a torchrun / :func:`launch` environment; the device this rank runs on
    (None: the generator's own). NCCL on CUDA (``--gpus``, or torchrun on a machine with CUDA unless
    ``--device cpu``), gloo otherwise."""
    env = distributed_env()
    if env is None:
        return args.device
    import torch
    import torch.distributed as dist

    rank, world, local = env
    if args.gpus is not None or args.nproc is not None:
        wants_cuda = args.gpus is not None
    elif args.device is not None:
        wants_cuda = args.device.startswith("cuda")
    else:
        wants_cuda = torch.cuda.is_available()
    device = args.device
    if wants_cuda:
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    elif device is None:
        device = "cpu"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if wants_cuda else "gloo", rank=rank, world_size=world)
    return device


def shutdown() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
