"""The series' figure rules that code can check: text large enough to read."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

import cityviz_helpers as cv  # noqa: E402
from cityviz_helpers import plotting  # noqa: E402


def test_savefig_refuses_text_smaller_than_8_pt_and_saves_readable_figures():
    plotting.setup_style()
    s = cv.get_settings()
    fig, ax = plt.subplots()
    ax.bar(["Amberton", "Coralia"], [1, 2])
    ax.set_xlabel("city")
    ax.legend(["share"])
    assert plotting.small_text(fig) == []
    path = plotting.savefig(fig, s, "readable")
    assert path.is_file() and path.stat().st_size > 0
    ax.tick_params(labelsize=6)
    ax.annotate("tiny", (0, 1), fontsize=7)
    assert any("'tiny' (7.0 pt)" == t for t in plotting.small_text(fig))
    with pytest.raises(ValueError, match="smaller than 8 pt.*'tiny' \\(7.0 pt\\)"):
        plotting.savefig(fig, s, "unreadable")
    assert not (s.figures_dir / "unreadable.png").exists()
    plt.close("all")


def test_class_and_cue_names_are_shown_readable_and_alike_in_every_notebook():
    from cityviz_helpers import ade20k, plotting_data, plotting_stats

    names = ade20k.readable_class_names()
    assert names[ade20k.class_index("traffic")] == "traffic light" and names[ade20k.class_index("auto")] == "car"
    assert names[59] != names[131]  # the two "screen" classes stay apart
    assert plotting_stats.class_labels() == names
    for raw in ("streetlight", "windowpane", "banded_facades", "road"):
        assert plotting_data.pretty_name(raw) == ade20k.readable_name(raw) and "_" not in ade20k.readable_name(raw)


def test_headless_runs_are_told_apart_from_a_students_jupyter(monkeypatch):
    from cityviz_helpers import utils

    monkeypatch.delenv("CITYVIZ_HEADLESS", raising=False)
    assert not utils.headless()
    for value, expected in (("1", True), ("yes", True), ("0", False), ("", False)):
        monkeypatch.setenv("CITYVIZ_HEADLESS", value)
        assert utils.headless() is expected
