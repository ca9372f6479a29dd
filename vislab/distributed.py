"""Where this process stands in a distributed run, whichever launcher started it, and the one run folder
every rank shares.

Lightning's own launcher (`trainer.devices=N` on one machine) starts ranks 1..N-1 from rank 0 after the run
folder exists: they find it in the environment. torchrun (one node or several) and Slurm's srun start
every rank at once, each running `vislab train` from the beginning; there the process group is opened
before the run folder is made, rank 0 makes it, and every rank receives its path, checks that it sees the
folder (a shared file system) and that its config is rank 0's. Lightning then finds the group open and
uses it."""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

from vislab.config import Config
from vislab.errors import VislabError

RUN_DIR_ENV = "VISLAB_RUN_DIR"  # how the ranks Lightning's launcher starts find rank 0's run folder


def external_environment():
    """The cluster environment of a launcher that starts every rank itself (torchrun, srun), else None."""
    if TorchElasticEnvironment.detect():
        return TorchElasticEnvironment()
    if SLURMEnvironment.detect():
        return SLURMEnvironment()
    return None


def global_rank() -> int:
    """This process's rank, known before any process group exists. Under Lightning's launcher only rank
    0 has no LOCAL_RANK/NODE_RANK; the ranks it starts count as 1 here (their true rank comes later)."""
    environment = external_environment()
    if environment is not None:
        return environment.global_rank()
    started = os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("NODE_RANK", "0") != "0"
    return 1 if started else 0


def is_rank_zero() -> bool:
    return global_rank() == 0


def expected_world_size(config: Config) -> int | None:
    """trainer.devices x trainer.num_nodes where devices is a number."""
    devices = config.trainer.devices
    if isinstance(devices, int) or str(devices).isdigit():
        return int(devices) * config.trainer.num_nodes
    return None


def open_group(config: Config) -> bool:
    """Under torchrun or srun, opens the process group (gloo on CPUs, NCCL on GPUs) so that the ranks can
    agree on the run folder before Lightning starts; checks that the launcher's world size is the config's.
    Returns whether this is such a run."""
    environment = external_environment()
    if environment is None or environment.world_size() == 1:
        return False
    world, expected = environment.world_size(), expected_world_size(config)
    mismatch = expected is not None and expected != world
    if mismatch and not isinstance(environment, TorchElasticEnvironment):
        # Slurm's count may name processes that were never started (sbatch without srun): no rendezvous.
        stop(mismatch_line(world, config), rank=environment.global_rank())
    if not dist.is_initialized():
        cuda = config.trainer.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(environment.local_rank())
        os.environ["MASTER_ADDR"] = environment.main_address
        os.environ["MASTER_PORT"] = str(environment.main_port)
        dist.init_process_group("nccl" if cuda else "gloo", rank=environment.global_rank(), world_size=world)
    if mismatch:  # torchrun's processes all exist: rank 0 says it before any of them leaves
        stop(mismatch_line(world, config))
    return True


def mismatch_line(world: int, config: Config) -> str:
    trainer = config.trainer
    return (
        f"the launcher started {world} processes, but trainer.devices x trainer.num_nodes is "
        f"{trainer.devices} x {trainer.num_nodes} = {expected_world_size(config)}: make them match"
    )


def agree(config: Config, make_run_dir, resume: Path | None) -> Path:
    """The run folder for every rank of a torchrun/srun run: `make_run_dir()` on rank 0 (or `resume`),
    sent to the others; each checks that it sees the folder and holds rank 0's config. A failed check is
    one line from rank 0 (VislabError); the other ranks exit with code 2 without repeating it."""
    rank = dist.get_rank()
    mine = config.model_dump(mode="json")
    failure = None
    run_dir = None
    if rank == 0:
        try:
            run_dir = resume if resume is not None else make_run_dir()
        except VislabError as error:
            failure = str(error)
    sent = [str(run_dir) if run_dir is not None else None, failure]
    dist.broadcast_object_list(sent, src=0)
    if sent[1] is not None:
        stop(sent[1])
    run_dir = Path(sent[0])
    seen = [None] * dist.get_world_size()
    dist.all_gather_object(seen, (socket.gethostname(), run_dir.is_dir(), mine))
    problem = disagreement(run_dir, seen)
    if problem is not None:
        if rank == 0 and resume is None:
            shutil.rmtree(run_dir, ignore_errors=True)
        stop(problem)
    return run_dir


def disagreement(run_dir: Path, seen: list[tuple[str, bool, dict]]) -> str | None:
    """What is wrong with the ranks' views of the run, if anything."""
    for rank, (host, sees, _) in enumerate(seen):
        if not sees:
            return (
                f"rank {rank} (on {host}) does not see the run folder {run_dir} that rank 0 made on "
                f"{seen[0][0]}: runs_dir must be on a file system every node shares"
            )
    reference = seen[0][2]
    for rank, (_, _, config) in enumerate(seen):
        differ = sorted(k for k in reference.keys() | config.keys() if reference.get(k) != config.get(k))
        if differ:
            keys = ", ".join(differ)
            return f"rank {rank} has another config than rank 0 ({keys}): start every rank with the same"
    return None


def stop(message: str, rank: int | None = None):
    """A problem every rank knows of: one line from rank 0 (VislabError), exit code 2 everywhere. With the
    process group open, the other ranks wait until rank 0 has ended the job (their barrier fails when it
    exits, or the launcher stops them), so that the line is written before any rank leaves."""
    rank = dist.get_rank() if rank is None else rank
    if rank == 0:
        raise VislabError(message)
    if dist.is_initialized():
        try:
            dist.barrier()
        except Exception:  # rank 0 is gone: its connection closed
            pass
    sys.exit(2)
