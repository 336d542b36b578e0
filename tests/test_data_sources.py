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
    settings["data"]["ade20k"]["sources"] = str(tmp_path)
    settings["data"]["coco_stuff164k"]["sources"] = str(tmp_path / "zips")
    return settings


def test_nothing_placed_names_both_datasets_in_one_line(paper, tmp_path):
    line = missing_data("paper", paper, {"ade20k", "coco_stuff164k"}, {"coco_stuff164k"})
    assert "\n" not in line and line.startswith("config.yaml: ")
    assert (f"ADEChallengeData2016.zip not found in {tmp_path}/: place it there "
            "(presets.paper.data.ade20k.sources), or set presets.paper.data.ade20k.download: "
            "true to download it; ") in line
    assert (f"{', '.join(COCO_ZIPS)} not found in {tmp_path}/zips/: place them there "
            "(presets.paper.data.coco_stuff164k.sources), or set "
            "presets.paper.data.coco_stuff164k.download: true to download them") in line
    # only the dataset that only the grid needs can be left out of it
    assert line.count("table15.datasets") == 1
    assert line.endswith("(or, to run without COCO-Stuff-164K, leave coco_stuff164k out of "
                         "presets.paper.table15.datasets)")


def test_only_the_missing_files_of_the_datasets_used_are_named(paper, tmp_path):
    (tmp_path / "zips").mkdir()
    (tmp_path / "zips" / "val2017.zip").touch()
    line = missing_data("paper", paper, {"coco_stuff164k"})
    assert "ADEChallengeData2016" not in line
    assert "train2017.zip, stuffthingmaps_trainval2017.zip not found" in line
    assert missing_data("paper", paper, set()) is None


def test_placed_or_downloaded_is_nothing_missing(paper, tmp_path):
    (tmp_path / "ADEChallengeData2016.zip").touch()
    paper["data"]["coco_stuff164k"]["download"] = True
    assert missing_data("paper", paper, {"ade20k", "coco_stuff164k"}) is None
    (tmp_path / "ADEChallengeData2016.zip").unlink()
    paper["data"]["ade20k"]["download"] = True
    assert missing_data("paper", paper, {"ade20k", "coco_stuff164k"}) is None


def test_a_dataset_without_a_block_is_looked_for_where_its_entry_puts_it(paper, tmp_path,
                                                                         monkeypatch):
    del paper["data"]["ade20k"]
    monkeypatch.chdir(tmp_path)
    line = missing_data("paper", paper, {"ade20k"})
    assert line.startswith("config.yaml: ADEChallengeData2016.zip not found in resources/paper/")
    (tmp_path / "resources/paper").mkdir(parents=True)
    (tmp_path / "resources/paper/ADEChallengeData2016.zip").touch()
    assert missing_data("paper", paper, {"ade20k"}) is None


def test_an_extracted_tree_in_the_sources_folder_counts_as_placed(paper, tmp_path):
    """A cluster where ADE20K is already extracted: `sources` names the folder holding the
    tree, which the preparation validates where it is (its input and --source)."""
    from internseg.datasets import DATASETS
    from internseg.preparation import preparation_inputs, source_argument

    ade20k = DATASETS["ade20k"]
    (tmp_path / "ADEChallengeData2016/images").mkdir(parents=True)
    assert missing_data("paper", paper, {"ade20k"}) is None
    inputs = preparation_inputs(ade20k, paper["data"]["ade20k"])
    assert inputs == [str(tmp_path)] and source_argument(inputs) == str(tmp_path)
    # the zip, once there, is what the preparation reads
    (tmp_path / "ADEChallengeData2016.zip").touch()
    inputs = preparation_inputs(ade20k, paper["data"]["ade20k"])
    assert inputs == [f"{tmp_path}/ADEChallengeData2016.zip"]
    assert source_argument(inputs) == str(tmp_path)
