"""Checkpoints, file reads and starts: the bytes a run stores, the assumed file-system
bandwidths, the Slurm profile's job limits, and the timeline of one run's steps,
validations, checkpoint writes and loads."""

from __future__ import annotations

from dataclasses import dataclass



# Assumed file-system bandwidths of a shared cluster file system: one writer (rank 0 writes a
# checkpoint while the other ranks wait) and one reader per node (the ranks memory-map the
# trunk file and a resumed checkpoint, so a node's ranks share one read through the page
# cache). Change them with --fs-write-gbps / --fs-read-gbps.
ASSUMED_FS_WRITE_GBPS = 2.0

ASSUMED_FS_READ_GBPS = 2.0
# A sharded run's periodic checkpoint is written by every rank at once (distributed
# checkpoint, a shard each): each rank at the one-writer figure, all of them together capped
# at this assumed whole-file-system figure (--fs-aggregate-write-gbps).
ASSUMED_FS_AGGREGATE_WRITE_GBPS = 8.0

# profiles/slurm/config.yaml: a training job gets min(1440 * attempt, 2880) minutes and
# SIGURG 600 s before the limit, then saves a checkpoint and is resubmitted (`retries`).
FIRST_JOB_HOURS = 24

MAX_JOB_HOURS = 48

STOP_WARNING_S = 600

# The what-ifs the markdown prices: validating and checkpointing every this many iterations,
# which leaves the trained weights as they are (neither is part of the run identity).
WHAT_IF_INTERVAL = 4000


@dataclass(frozen=True)
class Bandwidth:
    """The assumed file-system figures (GB/s) and, if given, how often every run starts."""

    write_gbps: float = ASSUMED_FS_WRITE_GBPS
    read_gbps: float = ASSUMED_FS_READ_GBPS
    starts: int | None = None  # None: as many jobs as the profile's time limits need
    aggregate_write_gbps: float = ASSUMED_FS_AGGREGATE_WRITE_GBPS

    def checkpoint_write_gbps(self, writers: int) -> float:
        """What ``writers`` ranks writing their shards at once reach together."""
        return min(writers * self.write_gbps, self.aggregate_write_gbps)


@dataclass(frozen=True)
class StoredBytes:
    """Bytes per trained parameter: held while training (weights, grads, two AdamW moments),
    in a work-dir checkpoint (weights and moments), in final.pth (weights)."""
    training: int
    checkpoint: int
    weights: int


def stored_bytes(cfg) -> StoredBytes:
    backbone = cfg.model.backbone
    if not backbone.get("freeze_trunk") and not backbone.get("master_weights", True):
        return StoredBytes(2 + 2 + 4, 2 + 4, 2)  # bf16 weights, grads and moments
    return StoredBytes(4 + 4 + 8, 4 + 8, 4)


@dataclass(frozen=True)
class Events:
    """Wall seconds of each thing a run does, once."""

    step: float
    validation: float
    checkpoint_write: float
    final_write: float
    trunk_read: float
    checkpoint_read: float


@dataclass(frozen=True)
class Timeline:
    validations: int
    checkpoints: int
    starts: int
    train_s: float
    validation_s: float
    checkpoint_s: float
    load_s: float

    @property
    def total_s(self) -> float:
        return self.train_s + self.validation_s + self.checkpoint_s + self.load_s


def job_seconds(attempts: int) -> float:
    """Training time in ``attempts`` jobs of the Slurm profile: 24 h, then 48 h each, each
    stopped at its SIGURG, 600 s before the limit."""
    return sum(min(FIRST_JOB_HOURS * a, MAX_JOB_HOURS) * 3600 - STOP_WARNING_S
               for a in range(1, attempts + 1))


def timeline(iterations: int, events: Events, val_interval: int, checkpoint_interval: int,
             save_last: bool, starts: int | None = None) -> Timeline:
    """How often a run validates, checkpoints and starts, and the seconds of each.

    mmengine validates every ``val_interval`` iterations and after the last; CheckpointHook
    saves every ``checkpoint_interval`` and (``save_last``) after the last; every start after
    the first follows a time-limit stop, which saved a checkpoint of its own, and resumes from
    it. ``starts`` None: as many jobs as the profile's time limits need for all of it."""
    validations = -(-iterations // val_interval)
    regular = iterations // checkpoint_interval + (
        1 if save_last and iterations % checkpoint_interval else 0)

    def at(n: int) -> Timeline:
        return Timeline(
            validations=validations, checkpoints=regular + n - 1, starts=n,
            train_s=iterations * events.step, validation_s=validations * events.validation,
            checkpoint_s=(regular + n - 1) * events.checkpoint_write + events.final_write,
            load_s=n * events.trunk_read + (n - 1) * events.checkpoint_read)

    if starts is not None:
        return at(starts)
    n = 1
    while job_seconds(n) < at(n).total_s:
        n += 1
    return at(n)
