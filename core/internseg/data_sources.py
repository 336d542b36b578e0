"""Whether a preset's dataset files are there before anything runs.

A file that is neither in place nor downloaded by the workflow would otherwise surface as
Snakemake's missing-input error naming a path deep in the DAG; the workflow asks this module
when it is parsed, and refuses with one line that says where to put the file or which setting
downloads it.
"""

from __future__ import annotations

from pathlib import Path

# A dataset only the Table 15 grid needs can be left out of it instead of being brought.
GRID_ADVICE = "or, to run without {title}, leave {name} out of presets.{preset}.table15.datasets"


def missing_data(preset: str, settings: dict, datasets: set[str],
                 grid_only: set[str] = frozenset()) -> str | None:
    """One line naming every file of ``datasets`` the preset neither has nor downloads
    (config.yaml's ``presets.<preset>.data``), or None when nothing is missing; for those of
    ``grid_only`` (only the Table 15 grid runs on them), how to leave them out."""
    from .datasets import DATASETS
    from .preparation import preparation_inputs, workflow_settings

    problems = []
    for name in sorted(datasets):
        dataset = DATASETS[name]
        given = workflow_settings(dataset, preset, settings)
        absent = [Path(p).name for p in preparation_inputs(dataset, given)
                  if not Path(p).exists()]
        if given["download"] or not absent:
            continue
        key, them = f"presets.{preset}.data.{name}", "it" if len(absent) == 1 else "them"
        line = (f"{', '.join(absent)} not found in {given['sources']}/: place {them} there "
                f"({key}.sources), or set {key}.download: true to download {them}")
        if name in grid_only:
            line += f" ({GRID_ADVICE.format(title=dataset.title, name=name, preset=preset)})"
        problems.append(line)
    return f"config.yaml: {'; '.join(problems)}" if problems else None
