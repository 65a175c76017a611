import os
from pathlib import Path

import pytest

import cityviz_helpers as cv
from cityviz_helpers.artifacts import artifact
from cityviz_helpers.settings import get_settings


def test_profiles_and_switches(monkeypatch):
    assert cv.get_settings().profile == "quick"
    monkeypatch.setenv("CITYVIZ_PROFILE", "full")
    assert cv.get_settings().profile == "full"
    assert cv.get_settings("quick").profile == "quick"  # the notebook parameter wins
    with pytest.raises(ValueError, match="Unknown profile 'fast'"):
        cv.get_settings("fast")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        cv.get_settings(data="/no/such/folder")


def test_settings_hash_changes_with_any_setting():
    base = cv.get_settings()
    same = cv.get_settings()
    other = cv.get_settings(overrides={"dataset": {"image_size": 64}})
    nested = cv.get_settings(overrides={"dataset": {"n_per_city": {"test": 7}}})
    assert base.hash("dataset") == same.hash("dataset")
    assert len({base.hash("dataset"), other.hash("dataset"), nested.hash("dataset")}) == 3
    assert nested["dataset"]["n_per_city"]["train"] == base["dataset"]["n_per_city"]["train"]
    assert cv.settings_hash({"a": 1, "b": 2}) == cv.settings_hash({"b": 2, "a": 1})
    with pytest.raises(KeyError, match="Unknown setting 'dataset.imagesize'"):
        cv.get_settings(overrides={"dataset": {"imagesize": 64}})


def test_artifact_is_reused_only_for_identical_settings(capsys):
    calls = []

    def build(folder):
        calls.append(folder)
        (folder / "value.txt").write_text("42")
        return {"note": "made"}

    s = cv.get_settings()
    first = artifact(s, "demo", ("dataset",), build)
    again = artifact(s, "demo", ("dataset",), build)
    changed = artifact(cv.get_settings(overrides={"dataset": {"seed": 1}}), "demo", ("dataset",), build)
    assert (first.loaded, again.loaded, changed.loaded) == (False, True, False)
    assert len(calls) == 2 and first.path == again.path != changed.path
    assert (again.path / "value.txt").read_text() == "42" and again.meta["note"] == "made"
    out = capsys.readouterr().out
    assert "computed it" in out and "loaded the cached artifact" in out
    # a new code version of the step is a new artifact too
    assert artifact(s, "demo", ("dataset",), build, version=2).loaded is False


def test_interrupted_build_leaves_nothing_trusted_and_rerun_recovers():
    s = cv.get_settings()

    def crash(folder):
        (folder / "half.txt").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        artifact(s, "demo", ("dataset",), crash)
    assert list(s.artifacts_dir.glob("demo-*")) == []
    # a partial folder left by a killed process is ours to clean up on the next run
    ok = artifact(s, "demo", ("dataset",), lambda f: (f / "x").write_text("1") and None)
    killed = ok.path.parent / f".{ok.path.name}.partial-99999"
    killed.mkdir()
    ok.path.rename(ok.path.with_name("moved"))
    again = artifact(s, "demo", ("dataset",), lambda f: None)
    assert again.loaded is False and not killed.exists()


def test_foreign_folder_is_never_overwritten():
    s = cv.get_settings()
    key = s.hash("dataset", extra={"step": "demo", "version": 1})
    foreign = s.artifacts_dir / f"demo-{key}"
    foreign.mkdir(parents=True)
    (foreign / "mine.txt").write_text("user data")
    with pytest.raises(RuntimeError, match="left untouched"):
        artifact(s, "demo", ("dataset",), lambda f: None)
    assert (foreign / "mine.txt").read_text() == "user data"


def test_downloaded_data_names_say_how_to_get_them(monkeypatch, tmp_path):
    monkeypatch.setenv("CITYVIZ_HOME", str(tmp_path / "empty-home"))
    with pytest.raises(FileNotFoundError, match=r"data_download.sh --source gsv-cities"):
        get_settings(data="gsv-cities")
    with pytest.raises(FileNotFoundError, match=r"`./data_download.sh`"):
        get_settings(data="osv5m")


def test_overrides_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CITYVIZ_OVERRIDES", '{"train": {"epochs": 3}}')
    assert get_settings("quick")["train"]["epochs"] == 3
    path = tmp_path / "lab.json"
    path.write_text('{"clustering": {"k": 5}}')
    monkeypatch.setenv("CITYVIZ_OVERRIDES", str(path))
    s = get_settings("quick")
    assert s["clustering"]["k"] == 5 and s["train"]["epochs"] == get_settings("quick", overrides={})["train"]["epochs"]
    assert s.hash("clustering") != get_settings("quick", overrides={"clustering": {"k": None}}).hash("clustering")
    monkeypatch.setenv("CITYVIZ_OVERRIDES", '{"train": {"epoch": 3}}')
    with pytest.raises(KeyError, match="Unknown setting 'train.epoch'"):
        get_settings("quick")
    monkeypatch.setenv("CITYVIZ_OVERRIDES", '{"train": ')
    with pytest.raises(ValueError, match="not valid JSON"):
        get_settings("quick")


def test_real_data_results_never_mix_with_the_built_in_ones(tmp_path):
    assert get_settings("quick", "synthetic").outputs_dir.name == "quick"
    assert get_settings("quick", tmp_path).outputs_dir.name.startswith(f"quick-{tmp_path.name}-")


def test_one_home_for_data_models_artifacts_and_outputs(monkeypatch, tmp_path):
    """The clone's folders in a clone; CITYVIZ_HOME when set; else platformdirs' user data folder
    (never the package's own folder, which is site-packages after a pip install)."""
    from cityviz_helpers import settings as st

    monkeypatch.delenv("CITYVIZ_ARTIFACTS")
    monkeypatch.delenv("CITYVIZ_OUTPUTS")
    assert st.in_clone() and st.home() == st.REPO_ROOT  # this checkout
    s = get_settings("quick", "synthetic")
    assert s.artifacts_dir == st.REPO_ROOT / "artifacts" / "quick" / "synthetic"

    monkeypatch.setattr(st, "REPO_ROOT", tmp_path / "site-packages")  # as after `pip install cityviz`
    (tmp_path / "site-packages" / "cityviz_helpers").mkdir(parents=True)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert not st.in_clone() and st.home() == tmp_path / "xdg" / "cityviz"
    assert get_settings("quick", "synthetic").outputs_dir == tmp_path / "xdg" / "cityviz" / "outputs" / "quick"

    monkeypatch.setenv("CITYVIZ_HOME", str(tmp_path / "drive" / "cityviz"))  # e.g. a mounted Google Drive
    s = get_settings("quick", "synthetic")
    assert st.home() == tmp_path / "drive" / "cityviz"
    assert s.artifacts_dir.is_relative_to(st.home()) and s.outputs_dir.is_relative_to(st.home())
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "drive" / "cityviz" / "data" / "osv5m")):
        get_settings(data="osv5m")
    from cityviz_helpers import download as dl

    assert dl.home() == st.home()  # data_download.sh writes its trees there too
