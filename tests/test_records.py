"""The results of record against the recorded facts: every published cell once, with its
source, pins and the report's printed averages; the metafile's own checks."""

import json

import pytest
import yaml

from conftest import FACTS
from internseg.cli import main
from internseg.errors import InputError
from internseg.records import METAFILE, parse_records, records, table15_printed
from internseg.trunks import TRUNKS

FACTS_DATA = yaml.safe_load(FACTS.read_text())
TABLE15 = FACTS_DATA["table15"]
# the facts name a trunk by its row ("448px_v1_0"), the registry by its file's trunk
TRUNK_OF_ROW = {row: next(t.name for t in TRUNKS.values() if t.file == facts["file"])
                for row, facts in FACTS_DATA["trunks"].items()}
REGIME = {"LP": "linear_probing", "HT": "head_tuning", "FT": "full_tuning"}
CELLS = {(TRUNK_OF_ROW[row], REGIME[column.split("_", 1)[0]], column.split("_", 1)[1]): value
         for row, values in TABLE15["rows"].items()
         for column, value in zip(TABLE15["columns"], values)
         if column.endswith(("_ade20k", "_coco_stuff164k"))}
INTERNVL_1_0 = {name: row["miou"] for name, row in FACTS_DATA["experiments"].items()
                if name != "common"} | {"adapter_tuning": FACTS_DATA["adapter_tuning"]["miou"]}


def test_every_table15_cell_is_a_record_with_its_number():
    assert len(CELLS) == 30
    for key, value in CELLS.items():
        record = records()[key]
        assert record.miou == value, key
        assert "internvl_2_5_table15" in {s.source for s in record.sources}, key


def test_the_nine_internvl_1_0_rows_are_records_and_shared_cells_are_one_record():
    assert len(INTERNVL_1_0) == 9
    for name, miou in INTERNVL_1_0.items():
        record = records()["intern_vit_6b_224px", name, "ade20k"]
        assert record.miou == miou
    # the 224px ADE20K cells of Table 15 are the InternVL 1.0 rows: one record, two sources
    for regime in REGIME.values():
        sources = {s.source for s in records()["intern_vit_6b_224px", regime, "ade20k"].sources}
        assert sources == {"internvl_1_0", "internvl_2_5_table15"}
    assert len(records()) == 30 + 9 - 3


def test_released_checkpoints_and_logs_are_the_hubs_files_with_their_pins():
    files = FACTS_DATA["hub"]["files"]
    released = [r for r in records().values() if r.released_checkpoint]
    assert len(released) == 8 and all(r.trunk == "intern_vit_6b_224px" for r in released)
    for record in released:
        pin = record.released_checkpoint
        assert pin.sha256 == files[pin.file]["sha256"]
        assert pin.size == files[pin.file].get("size")
        # the training log sits beside the checkpoint on the Hub, with the same stem
        assert record.published_log == pin.file.removesuffix(".pth") + ".log"
    adapter = records()["intern_vit_6b_224px", "adapter_tuning", "ade20k"]
    assert adapter.released_checkpoint is None
    # the facts name it in a comment: the fork's config stem, 512 px, 80k
    assert adapter.published_log == "upernet_intern_vit_adapter_6b_512_80k_ade20k_bs16_lr4e-5.log"
    # nothing was published for the 448px trunks or COCO-Stuff (facts: no_released_files)
    assert not any(r.published_log for r in records().values()
                   if r.trunk != "intern_vit_6b_224px" or r.dataset != "ade20k")


def test_the_printed_averages_and_gaps_are_the_reports():
    columns = TABLE15["columns"]
    for row, values in TABLE15["rows"].items():
        printed = table15_printed()[TRUNK_OF_ROW[row]]
        for name in ("LP_avg", "HT_avg", "FT_avg", "delta1", "delta2"):
            assert printed[name] == values[columns.index(name)], (row, name)


def test_the_report_takes_averages_and_gaps_from_unrounded_means():
    """Each printed average and gap is what its printed cells give, to the report's rounding
    (ties at .x5 went either way: 55.25 printed 55.3, 41.05 printed 41.0)."""
    for row, values in TABLE15["rows"].items():
        cell = dict(zip(TABLE15["columns"], values))
        avg = {r: (cell[f"{r}_ade20k"] + cell[f"{r}_coco_stuff164k"]) / 2 for r in REGIME}
        computed = dict(LP_avg=avg["LP"], HT_avg=avg["HT"], FT_avg=avg["FT"],
                        delta1=avg["HT"] - avg["LP"], delta2=avg["FT"] - avg["LP"])
        for name, value in computed.items():
            assert abs(value - cell[name]) <= 0.05 + 1e-9, (row, name)


def test_records_json_lists_every_cell_with_its_source(capsys):
    assert main(["records", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == len(records())
    assert all({"trunk", "experiment", "dataset", "mIoU", "source"} <= set(r) for r in rows)
    cell = next(r for r in rows if (r["trunk"], r["experiment"], r["dataset"]) == (
        "intern_vit_6b_448px_v2_5", "linear_probing", "ade20k"))
    assert cell["mIoU"] == 39.4 and "Table 15" in cell["source"]
    assert main(["records"]) == 0
    assert "| coco_stuff164k | intern_vit_6b_448px_v2_5 | full_tuning | 51.8 |" in (
        capsys.readouterr().out)


def _metafile(**entry):
    base = dict(trunk="intern_vit_6b_224px", experiment="head_tuning", dataset="ade20k",
                mIoU=54.9, sources=[dict(source="s", cell="HT")])
    return dict(sources=dict(s=dict(short="S", title="T", where="W", reports="log")),
                records=[base | entry])


@pytest.mark.parametrize("data,named", [
    (_metafile(trunk="intern_vit_7b"), "trunk 'intern_vit_7b' is not registered"),
    (_metafile(dataset="voc"), "dataset 'voc' is not registered"),
    (_metafile(mIoU=130), "mIoU 130 is not a percentage"),
    (_metafile(sources=[]), "needs its source"),
    (_metafile(sources=[dict(source="blog")]), "source 'blog' is not one of"),
    (_metafile(colour="blue"), "unknown keys ['colour']"),
    (_metafile(released_checkpoint=dict(file="a.pth", sha256="abc")), "64 hex digits"),
])
def test_a_bad_record_is_named_with_its_file_and_entry(data, named):
    with pytest.raises(InputError, match=r"\[") as err:
        parse_records(data, "meta.yaml", {"head_tuning"})
    assert str(err.value).startswith("meta.yaml: records[0]:") and named in str(err.value)


def test_one_cell_has_one_number():
    data = _metafile()
    data["records"].append(dict(data["records"][0], mIoU=55.0))
    with pytest.raises(InputError, match="a second record of intern_vit_6b_224px/head_tuning"):
        parse_records(data, "meta.yaml", {"head_tuning"})


def test_the_metafile_is_package_data():
    assert METAFILE.name == "metafile.yaml" and METAFILE.is_file()


def test_which_number_each_source_reports(reference):
    """Table 15's grid has no logs and its fork's configs keep the best validation; InternVL
    1.0's logs are published (its records name them) and show both."""
    assert "save_best auto" in reference["ablation_448"]["common"]["evaluation"]
    assert "no 448px or COCO-Stuff checkpoints or logs" in reference["table15"][
        "no_released_files"]
    for record in records().values():
        first = record.sources[0].source
        if first == "internvl_2_5_table15":
            assert record.reports == "best_validation" and record.published_log is None
        else:
            assert record.reports == "log" and record.published_log, record.key


def test_a_source_without_a_known_reports_rule_is_refused():
    data = _metafile()
    data["sources"]["s"]["reports"] = "final"
    with pytest.raises(InputError, match="sources.s.reports is 'final', not one of log, "
                                         "best_validation"):
        parse_records(data, "meta.yaml", {"head_tuning"})
