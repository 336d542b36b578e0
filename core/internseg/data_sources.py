"""Whether a preset's dataset files are there before anything runs.

A zip that is neither in place nor downloaded by its preparation would otherwise surface as
Snakemake's missing-input error naming a path deep in the DAG; the workflow asks this module
when it is parsed, and refuses with one line that says where to put the file or which setting
downloads it.
"""

from __future__ import annotations

from pathlib import Path


def missing_data(preset: str, settings: dict, datasets: set[str]) -> str | None:
    """One line naming every dataset file of ``datasets`` the preset neither has nor downloads
    (config.yaml's ``presets.<preset>``), or None when nothing is missing."""
    from .coco_stuff import SOURCES
    from .datasets import DATASETS
    from .preparation import workflow_settings

    problems = []
    for name in sorted(datasets):
        dataset = DATASETS[name]
        if dataset.convert is not None:
            continue
        given = workflow_settings(dataset, preset, settings)
        if given["download"] or Path(given["archive"]).exists():
            continue
        place = f"{given['archive']} not found: place {dataset.sources[0].name} there"
        problems.append(
            f"{place} (presets.{preset}.{name}.archive), or set "
            f"presets.{preset}.{name}.download: true to download it" if name in settings
            # no block of its own: the place its entry gives (preparation.workflow_settings)
            else f"{place} (where {name}'s entry puts it in preset {preset})")
    if "coco_stuff164k" in datasets:
        coco = settings["coco_stuff164k"]
        absent = [name for name in SOURCES if not (Path(coco["zips"]) / name).is_file()]
        if absent and not coco["download"]:
            problems.append(f"{', '.join(absent)} not found in {coco['zips']}/: place them "
                            f"there (presets.{preset}.coco_stuff164k.zips), or set "
                            f"presets.{preset}.coco_stuff164k.download: true to download them "
                            f"(or, to run without COCO-Stuff, leave it out of "
                            f"presets.{preset}.table15.datasets)")
    return f"config.yaml: {'; '.join(problems)}" if problems else None
