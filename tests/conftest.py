import os

import pytest


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path, monkeypatch):
    """Each test writes artifacts and outputs under its own temporary folder."""
    monkeypatch.setenv("CITYVIZ_ARTIFACTS", str(tmp_path / "artifacts"))
    monkeypatch.setenv("CITYVIZ_OUTPUTS", str(tmp_path / "outputs"))
    monkeypatch.delenv("CITYVIZ_PROFILE", raising=False)
    monkeypatch.delenv("CITYVIZ_DATA", raising=False)
    yield
