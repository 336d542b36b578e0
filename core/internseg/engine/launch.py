"""One process per GPU for `internseg train --gpus N`.

Inside a Slurm allocation the ranks are Slurm tasks (`srun`, `--launcher slurm`), so each of
them receives Slurm's signals directly, on one node or several; elsewhere torchrun starts them.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence


def launch_command(argv: Sequence[str], gpus: int, launcher: str,
                   env: Mapping[str, str]) -> list[str] | None:
    """The command that starts the ranks, or None to train in this process."""
    if gpus <= 1 or launcher != "none":
        return None
    rank_argv = [sys.executable, "-m", "internseg", *argv]
    if "SLURM_JOB_ID" in env and "SLURM_STEP_ID" not in env:
        return ["srun", f"--ntasks={gpus}", "--kill-on-bad-exit=1", *rank_argv,
                "--launcher", "slurm"]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={gpus}", "-m", "internseg", *argv, "--launcher", "pytorch"]
