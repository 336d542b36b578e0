"""The paper preset's data checked when the workflow is parsed: one line per missing file,
saying where it goes or which setting downloads it."""

from pathlib import Path

import pytest
import yaml

from internseg.data_sources import missing_data

CONFIG = Path(__file__).parents[1] / "config.yaml"
COCO_ZIPS = ("train2017.zip", "val2017.zip", "stuffthingmaps_trainval2017.zip")


@pytest.fixture
def paper(tmp_path):
    settings = yaml.safe_load(CONFIG.read_text())["presets"]["paper"]
    settings["ade20k"]["archive"] = str(tmp_path / "ADEChallengeData2016.zip")
    settings["coco_stuff164k"]["zips"] = str(tmp_path / "zips")
    return settings


def test_nothing_placed_names_both_datasets_in_one_line(paper, tmp_path):
    line = missing_data("paper", paper, {"ade20k", "coco_stuff164k"})
    assert "\n" not in line and line.startswith("config.yaml: ")
    assert (f"{tmp_path}/ADEChallengeData2016.zip not found: place ADEChallengeData2016.zip "
            "there (presets.paper.ade20k.archive), or set presets.paper.ade20k.download: true"
            ) in line
    assert (f"{', '.join(COCO_ZIPS)} not found in {tmp_path}/zips/: place them there "
            "(presets.paper.coco_stuff164k.zips), or set "
            "presets.paper.coco_stuff164k.download: true") in line
    assert "leave it out of presets.paper.table15.datasets" in line


def test_only_the_missing_files_of_the_datasets_used_are_named(paper, tmp_path):
    (tmp_path / "zips").mkdir()
    (tmp_path / "zips" / "val2017.zip").touch()
    line = missing_data("paper", paper, {"coco_stuff164k"})
    assert "ADEChallengeData2016" not in line
    assert "train2017.zip, stuffthingmaps_trainval2017.zip not found" in line
    assert missing_data("paper", paper, set()) is None


def test_placed_or_downloaded_is_nothing_missing(paper, tmp_path):
    (tmp_path / "ADEChallengeData2016.zip").touch()
    paper["coco_stuff164k"]["download"] = True
    assert missing_data("paper", paper, {"ade20k", "coco_stuff164k"}) is None
    (tmp_path / "ADEChallengeData2016.zip").unlink()
    paper["ade20k"]["download"] = True
    assert missing_data("paper", paper, {"ade20k", "coco_stuff164k"}) is None


def test_an_extracted_folder_counts_as_placed(paper, tmp_path):
    paper["ade20k"]["archive"] = str(tmp_path)  # `archive` may name the extracted folder
    assert missing_data("paper", paper, {"ade20k"}) is None
