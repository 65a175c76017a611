import json
from pathlib import Path

import pytest
import torch

#: Folders run only when asked for by path, after nbval has filled the artifact cache (``make test`` runs
#: them): ``browser/`` needs Chromium too; ``cached/`` packs that cache. A plain ``pytest tests`` leaves them out.
ASKED_ONLY = ("browser", "cached")
HERE = Path(__file__).resolve().parent


def pytest_ignore_collect(collection_path, config):
    for name in ASKED_ONLY:
        folder = HERE / name
        if collection_path == folder or folder in collection_path.parents:
            asked = [(config.invocation_params.dir / arg.split("::")[0]).resolve() for arg in config.args]
            if not any(path == folder or folder in path.parents for path in asked):
                return True
    return None


CITIES = {"Tokyo_NaN_Tokyo_JP": 40, "Pittsburgh_NaN_Pennsylvania_US": 40, "Paris_NaN_Ile-de-France_FR": 40}


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path, monkeypatch):
    """Each test writes artifacts and outputs under its own temporary folder."""
    monkeypatch.setenv("CITYVIZ_ARTIFACTS", str(tmp_path / "artifacts"))
    monkeypatch.setenv("CITYVIZ_OUTPUTS", str(tmp_path / "outputs"))
    monkeypatch.delenv("CITYVIZ_PROFILE", raising=False)
    monkeypatch.delenv("CITYVIZ_DATA", raising=False)
    for name in ("CITYVIZ_HOME", "CITYVIZ_PACK", "CITYVIZ_INSTALL"):  # a user's own settings stay out
        monkeypatch.delenv(name, raising=False)
    yield


@pytest.fixture(scope="session")
def real_world(tmp_path_factory):
    """A miniature OpenStreetView-5M fetched from a loopback Hub, random-weight ResNet-18 (ImageNet
    format) and ADE20K Segformer, and the overrides that keep the series on it short."""
    import segmentation_models_pytorch as smp
    from torchvision.models import resnet18

    from cityviz_helpers import download as dl

    from httpfixture import HubServer
    import osv5m_fixture as fx

    root = tmp_path_factory.mktemp("real")
    files, _ = fx.build(cities=CITIES, missing=0, size=64)
    with HubServer({fx.REPO: files}) as server:
        report = dl.fetch_osv5m(root / "osv5m", ["Tokyo", "Pittsburgh", "Paris"], per_city=40,
                                endpoint=server.url, shards={"test": 2})
    assert report.written == {"Tokyo": 40, "Pittsburgh": 40, "Paris": 40}
    torch.manual_seed(0)
    smp.Segformer(encoder_name="mit_b0", encoder_weights=None, classes=150).save_pretrained(str(root / "segformer"))
    cache = root / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(resnet18(weights=None).state_dict(), cache / Path(dl.weights_url("resnet18")).name)
    overrides = {"dataset": {"max_per_city": None, "min_side": 16},
                 "train": {"epochs": 2, "lr_step": 1},
                 "gradcam": {"randomization_images": 10},
                 "clustering": {"min_area": 8, "k_range": [2, 4], "tsne_perplexity": 5},
                 "segmentation": {"ade20k_folder": str(root / "segformer"), "ade20k_input_size": 64,
                                  "n_boot": 50, "n_perm": 200}}
    (root / "overrides.json").write_text(json.dumps(overrides))
    return root
