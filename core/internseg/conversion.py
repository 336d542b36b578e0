"""Raw label maps converted to a tree's label maps by the value mapping of a dataset entry
(:class:`internseg.datasets.Conversion`): COCO-Stuff's 182 raw classes to its 171 train ids.

A map is written under a hidden temporary name and renamed, so a killed conversion leaves
no file that looks finished, and one already converted (under its final name) is kept: that
is the resume.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path

from .archives import MAX_ERRORS, DatasetError, Report, format_problems, list_files, progress_bar
from .datasets import Conversion, Dataset
from .io import naming_full_disk
from .locks import die_with_parent

log = logging.getLogger("internseg")

# The lookup table's value for raw values outside the mapping (no label id is 254).
_UNMAPPED = 254


def lookup_table(conversion: Conversion):
    import numpy as np

    if _UNMAPPED in conversion.mapping.values():
        raise ValueError(f"a conversion cannot map onto {_UNMAPPED}, its marker of the unmapped")
    table = np.full(256, _UNMAPPED, dtype=np.uint8)
    for raw, label in conversion.mapping.items():
        table[raw] = label
    return table


def convert_map(raw: Path, out: Path, image: Path, name: str, table) -> str | None:
    """Convert one raw map to ``out`` through ``table``; returns the problem instead when the
    map cannot be converted (``name`` is how messages call it)."""
    import numpy as np
    from PIL import Image

    try:
        with Image.open(raw) as im:
            mode, size = im.mode, im.size
            pixels = np.asarray(im) if mode == "L" else None
    except Exception as err:  # PIL raises many types for a broken file
        return f"{name}: unreadable map ({err})"
    if pixels is None:
        return f"{name}: must be single-channel 8-bit (PIL mode 'L'), found mode {mode!r}"
    try:
        with Image.open(image) as im:
            image_size = im.size  # the header only: validation decodes the image later
    except Exception as err:
        return f"{name}: its image {image.name} is unreadable ({err})"
    if size != image_size:
        return (f"{name}: size {size[0]}x{size[1]} differs from its image {image.name} "
                f"({image_size[0]}x{image_size[1]})")
    converted = table[pixels]
    unmapped = converted == _UNMAPPED
    if unmapped.any():
        values = ", ".join(str(v) for v in np.unique(pixels[unmapped]))
        return (f"{name}: raw values {values} are not in the dataset's mapping "
                f"({int(unmapped.sum())} pixels)")
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with naming_full_disk(out, temporary=tmp):
            Image.fromarray(converted).save(tmp, format="PNG")
            os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return None


def _convert_star(task: tuple) -> str | None:
    return convert_map(*task)


def convert_maps(dataset: Dataset, raw_root: Path, tree: Path, *, workers: int,
                 max_errors: int = MAX_ERRORS, progress: bool = True,
                 report: Report = log.info) -> dict:
    """Convert ``raw_root/<split>/<stem><raw_suffix>`` to the tree's label maps
    (``<labels>/<split>/<stem><label_suffix>``), each checked against its image.

    Returns the conversion figures; raises one DatasetError listing every map refused.
    """
    layout, conversion = dataset.layout, dataset.convert
    table = lookup_table(conversion)
    tasks, done = [], 0
    for split, _ in layout.splits():
        out_dir = tree / layout.labels / split
        out_dir.mkdir(parents=True, exist_ok=True)
        for leftover in out_dir.glob(".*"):  # half-written by a killed run
            leftover.unlink()
        have = set(list_files(out_dir, layout.label_suffix)[0])
        for stem in sorted(list_files(raw_root / split, conversion.raw_suffix)[0]):
            if stem in have:
                done += 1
            else:
                tasks.append((raw_root / split / f"{stem}{conversion.raw_suffix}",
                              out_dir / f"{stem}{layout.label_suffix}",
                              tree / layout.images / split / f"{stem}{layout.image_suffix}",
                              f"{split}/{stem}{conversion.raw_suffix}", table))
    if done:
        report(f"resuming the conversion: {done} maps already converted, {len(tasks)} to go")
    start = time.perf_counter()
    problems = []
    with contextlib.ExitStack() as stack:
        if workers > 1 and len(tasks) > 1:
            from concurrent.futures import ProcessPoolExecutor

            # the workers share the data root's lock: they must not outlive this process
            pool = stack.enter_context(ProcessPoolExecutor(
                max_workers=workers, initializer=die_with_parent, initargs=(os.getpid(),)))
            # an interruption must not wait for every queued map to be converted
            stack.callback(pool.shutdown, cancel_futures=True)
            chunk = max(1, min(64, len(tasks) // (8 * workers)))
            results = pool.map(_convert_star, tasks, chunksize=chunk)
        else:
            results = map(_convert_star, tasks)
        for problem in progress_bar(results, total=len(tasks), desc="convert", unit="map",
                                    disable=not progress):
            if problem is not None:
                problems.append(problem)
    seconds = time.perf_counter() - start
    rate = len(tasks) / max(seconds, 1e-9)
    report(f"converted {len(tasks) - len(problems)} maps in {seconds:.1f} s with {workers} "
           f"worker{'s' if workers != 1 else ''}: {rate:.1f} images/s")
    if problems:
        raw_zip = next(s.name for s in dataset.sources if s.holds == "raw_labels")
        raise DatasetError(format_problems(f"{raw_zip}: maps refused", problems, max_errors))
    return dict(images=len(tasks), seconds=round(seconds, 3), images_per_s=round(rate, 1),
                workers=workers, already_converted=done)
