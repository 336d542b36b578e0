import os
import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FACTS = REPO / "tests" / "facts" / "experiments.yaml"

# Keep torch to the machine's cores without oversubscribing when tests run jobs.
os.environ.setdefault("OMP_NUM_THREADS", "2")
warnings.filterwarnings("ignore")


@pytest.fixture(scope="session")
def reference():
    """The recorded facts of the original experiments (tests/facts/experiments.yaml, a copy
    of shared/reference/experiments.yaml)."""
    import yaml

    return yaml.safe_load(FACTS.read_text())


@pytest.fixture(scope="session")
def demo_assets(tmp_path_factory):
    """The demo zip extracted, and the tiny checkpoint: built once per session."""
    import zipfile

    from internseg.demo import write_demo_zip, write_tiny_checkpoint

    root = tmp_path_factory.mktemp("demo")
    archive = write_demo_zip(root / "ADEChallengeData2016.zip", n_train=24, n_val=4, seed=0)
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(root / "data")
    weights = write_tiny_checkpoint(root / "hub" / "intern_vit_tiny_demo.pth")
    return dict(root=root, archive=archive, data_root=root / "data" / "ADEChallengeData2016",
                weights=weights)
