"""A trunk entry's Hub source counts: a trunk with its own ``hub_repo`` and ``revision`` is
fetched from there (records.fetch_args, the fetch rule's options), every other file from
config.yaml's ``hub`` block; a preset that downloads refuses at parse a file without a
pinned revision, naming the trunk or the block."""

import hashlib

import pytest

from internseg.errors import InputError
from internseg.records import (check_hub_revisions, fetch_args, hub_files, hub_pins,
                               hub_source, record_of)
from internseg.trunks import TRUNKS, Trunk
from test_workflow import place_paper_data, snakemake, workflow_copy

HUB = {"repo_id": "OpenGVLab/InternVL", "revision": "9" * 40}
NAME = "intern_vit_6b_test_hub"
REPO_ID, REVISION = "example-org/InternViT-6B-test", "0123456789abcdef" * 2 + "01234567"
SHA = hashlib.sha256(b"abc").hexdigest()
RECORD = record_of("intern_vit_6b_224px", "fewshot_1of16", "ade20k")
LOG = RECORD.published_log


def own_hub_trunk(**source) -> Trunk:
    """A 6B-shaped trunk (every experiment runs on it) in a repo of its own."""
    return Trunk(name=NAME, file=f"{NAME}.pth", embed_dim=3200, depth=48, num_heads=25,
                 pretrain_size=224, taps=(11, 23, 35, 47), size=3, sha256=SHA, **source)


@pytest.fixture
def trunk(monkeypatch):
    member = own_hub_trunk(hub_repo=REPO_ID, revision=REVISION)
    monkeypatch.setitem(TRUNKS, NAME, member)
    return member


def test_a_trunk_with_its_own_source_is_fetched_from_it_with_its_pins(trunk):
    assert fetch_args(trunk.file, HUB, hub_pins(), None) == [
        "--repo-id", REPO_ID, "--revision", REVISION, "--sha256", SHA, "--size", "3"]
    # the hub block's revision is never the trunk's, even with the block unpinned
    assert hub_source(trunk.file, dict(HUB, revision=None)) == (REPO_ID, REVISION)


def test_a_trunk_without_one_and_the_records_files_take_the_hub_block(trunk):
    t224 = TRUNKS["intern_vit_6b_224px"]
    assert fetch_args(t224.file, HUB, hub_pins(), None) == [
        "--repo-id", HUB["repo_id"], "--revision", HUB["revision"], "--sha256", t224.sha256,
        "--size", str(t224.size)]
    # a published log has no pins; with a local folder, that folder is named last
    assert fetch_args(LOG, HUB, hub_pins(), "hub_dir") == [
        "--repo-id", HUB["repo_id"], "--revision", HUB["revision"], "--local-dir", "hub_dir"]
    # no pins verified (the demo), no revision: neither is stated
    assert fetch_args(t224.file, dict(HUB, revision=None), {}, None) == [
        "--repo-id", HUB["repo_id"]]


def test_a_trunk_with_only_its_own_revision_is_the_hub_blocks_repo_at_that_commit(monkeypatch):
    monkeypatch.setitem(TRUNKS, NAME, own_hub_trunk(revision=REVISION))
    assert hub_source(f"{NAME}.pth", HUB) == (HUB["repo_id"], REVISION)


def test_an_unpinned_file_is_refused_naming_its_trunk_or_the_hub_block(monkeypatch):
    unpinned = dict(HUB, revision=None)
    files = hub_files(["intern_vit_6b_224px"] * 2, [RECORD, None])
    assert files == ["intern_vit_6b_224px.pth", LOG, RECORD.released_checkpoint.file]
    with pytest.raises(InputError, match=r"^config.yaml: hub.revision is null but preset "
                       r"'paper' downloads intern_vit_6b_224px.pth from the Hub"):
        check_hub_revisions(files, unpinned, "paper", None)
    check_hub_revisions(files, unpinned, "paper", "a_folder")  # nothing downloads
    # a trunk with its own revision needs none from the block
    monkeypatch.setitem(TRUNKS, NAME, own_hub_trunk(hub_repo=REPO_ID, revision=REVISION))
    check_hub_revisions(hub_files([NAME], []), unpinned, "paper", None)
    # one in another repo without its revision is unpinned, whatever the block says
    monkeypatch.setitem(TRUNKS, NAME, own_hub_trunk(hub_repo=REPO_ID))
    assert fetch_args(f"{NAME}.pth", HUB, {}, None) == ["--repo-id", REPO_ID]
    with pytest.raises(InputError) as err:
        check_hub_revisions(hub_files([NAME], []), HUB, "paper", None)
    assert str(err.value) == (
        f"core/internseg/trunks.py: trunk {NAME} has hub_repo {REPO_ID} but no revision, and "
        f"preset 'paper' downloads {NAME}.pth from the Hub (presets.paper.weights_local_dir "
        "is null): the file would be unpinned; set the entry's revision to a 40-hex commit of "
        "that repo")


def test_a_trunk_revision_must_be_a_commit():
    with pytest.raises(ValueError, match="revision 'main' is not a 40-hex commit"):
        own_hub_trunk(hub_repo=REPO_ID, revision="main")


ENTRY = f"""
register_trunk(Trunk(
    name="{NAME}", file="{NAME}.pth", embed_dim=3200, depth=48, num_heads=25,
    pretrain_size=224, taps=(11, 23, 35, 47), size=3, sha256="{SHA}",
    hub_repo="{REPO_ID}", revision="{REVISION}"))
"""
# the paper preset on the new trunk alone, seeded without a published log, with the hub
# block unpinned: nothing it fetches needs it
ON_IT = f"""run: [fewshot_1of16]
hub: {{revision: null}}
presets:
  paper:
    seed: 0
    trunks: [{NAME}]
    table15: {{trunks: [{NAME}], datasets: [ade20k]}}
"""


def test_the_workflow_fetches_a_trunk_from_its_entrys_repo_and_revision(tmp_path):
    wf = place_paper_data(workflow_copy(tmp_path, with_package=True))
    trunks = wf / "core/internseg/trunks.py"
    trunks.write_text(trunks.read_text() + ENTRY)
    (wf / "on_it.yaml").write_text(ON_IT)
    result = snakemake(wf, "-n", "-p", "all", "table15", "--configfile", "on_it.yaml",
                       "--config", "preset=paper")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (f"internseg fetch {NAME}.pth --out resources/paper/weights/{NAME}.pth --repo-id "
            f"{REPO_ID} --revision {REVISION} --sha256 {SHA} --size 3 > ") in result.stdout
    assert "OpenGVLab/InternVL" not in result.stdout
    # the same entry without its revision: refused when the workflow is parsed, naming it
    trunks.write_text(trunks.read_text().replace(f', revision="{REVISION}"', ""))
    refused = snakemake(wf, "-n", "--configfile", "on_it.yaml", "--config", "preset=paper")
    assert refused.returncode != 0
    assert (f"core/internseg/trunks.py: trunk {NAME} has hub_repo {REPO_ID} but no revision"
            in refused.stdout + refused.stderr)
