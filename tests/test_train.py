import json

import pytest
import torch

import cityviz_helpers as cv
from cityviz_helpers import data as cvdata
from cityviz_helpers.models import ARCHITECTURES, CAM_LAYERS, build_model, count_params, receptive_field, target_layer
from cityviz_helpers.train import (CheckpointError, accuracy, load_checkpoint, model_dir, split_tensors,
                                   train_model)

TINY = {"dataset": {"n_per_city": {"train": 6, "val": 2, "test": 2}, "image_size": 96},
        "train": {"epochs": 3, "batch_size": 8, "lr_step": 2, "max_shift": 3}}  # shifts: resume must replay them


@pytest.fixture
def tiny():
    torch.set_num_threads(1)
    s = cv.get_settings(overrides=TINY)
    d = cvdata.load_dataset(s, verbose=False)
    return s, d, split_tensors(d, "train", 96, False), split_tensors(d, "val", 96, False)


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
@pytest.mark.parametrize("size", [96, 128])
def test_every_architecture_builds_for_any_size_and_has_a_target_layer(arch, size):
    model = build_model(arch, 3, size, "narrow")
    out = model(torch.zeros(2, 3, size, size))
    assert out.shape == (2, 3)
    layer = target_layer(model, arch)
    assert any(layer is m for m in model.modules())
    assert receptive_field(model, arch) > 1 and count_params(model) > 0
    # the finer CAM layers: each one down-sampling step before the last, so each grid at least twice as fine
    sides = []
    for name in CAM_LAYERS:
        out = []
        hook = target_layer(model, arch, name).register_forward_hook(lambda m, i, o: out.append(o.shape[-1]))
        with torch.no_grad():
            model(torch.zeros(1, 3, size, size))
        hook.remove()
        sides.append(out[0])
    assert sides[1] >= 2 * sides[0] and sides[2] >= 2 * sides[1], sides
    with pytest.raises(ValueError, match="Unknown CAM layer"):
        target_layer(model, arch, "first")


def test_too_small_input_is_a_clear_error():
    with pytest.raises(ValueError, match="too small"):
        build_model("simple", 2, 48, "narrow")


def test_paper_width_matches_the_paper():
    vgg = build_model("vgg11", 2, 224, "paper")
    assert vgg.classifier[-1].out_features == 2 and vgg.classifier[0].out_features == 4096
    simple = build_model("simple", 2, 224, "paper")
    assert [m.out_channels for m in simple.features if isinstance(m, torch.nn.Conv2d)] == [20, 64, 96, 128]
    assert receptive_field(build_model("resnet18", 2, 224, "paper"), "resnet18") == 435


def test_missing_pretrained_weights_name_the_download_option(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(FileNotFoundError, match="data_download.sh --weights"):
        build_model("resnet18", 2, 64, "paper", pretrained=True)


def test_tiny_model_overfits_a_tiny_batch():
    torch.manual_seed(0)
    model = build_model("simple", 2, 96, "narrow")
    x, y = torch.randn(8, 3, 96, 96), torch.tensor([0, 1] * 4)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    model.eval()  # no dropout: the loss must fall steadily
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]


def test_same_seed_same_weights_and_checkpoint_round_trip(tiny, tmp_path, monkeypatch):
    s, d, tr, va = tiny
    first = train_model(s, d, "simple", 0, tr, va, verbose=False)
    monkeypatch.setenv("CITYVIZ_ARTIFACTS", str(tmp_path / "other"))
    second = train_model(s, d, "simple", 0, tr, va, verbose=False)
    assert first.path != second.path
    for (k, a), (_, b) in zip(first.model.state_dict().items(), second.model.state_dict().items()):
        assert torch.equal(a, b), k
    other_seed = train_model(s, d, "simple", 1, tr, va, verbose=False)
    assert not torch.equal(other_seed.model.features[0].weight, first.model.features[0].weight)
    loaded = load_checkpoint(first.path, "simple", d.cities)
    x = torch.randn(4, 3, 96, 96)
    assert torch.equal(loaded.model(x), first.model.eval()(x))
    assert loaded.meta["best_epoch"] >= 1 and len(loaded.meta["history"]["val_accuracy"]) == 3
    again = train_model(s, d, "simple", 1, tr, va, verbose=False)
    assert again.loaded


@pytest.mark.parametrize("schedule", ["onecycle", "step"])  # stepped per batch / per epoch
def test_killed_run_resumes_to_the_same_weights(schedule, tmp_path, monkeypatch):
    torch.set_num_threads(1)
    s = cv.get_settings(overrides={**TINY, "train": {**TINY["train"], "schedule": schedule}})
    d = cvdata.load_dataset(s, verbose=False)
    tr, va = split_tensors(d, "train", 96, False), split_tensors(d, "val", 96, False)
    reference = train_model(s, d, "resnet18", 0, tr, va, verbose=False)
    monkeypatch.setenv("CITYVIZ_ARTIFACTS", str(tmp_path / "killed"))

    def kill(epoch, batch):
        if epoch == 1 and batch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_model(s, d, "resnet18", 0, tr, va, verbose=False, _after_batch=kill)
    folder = model_dir(s, d, "resnet18", 0)
    assert (folder / "last.pt").exists() and not (folder / "model.json").exists()
    with pytest.raises(CheckpointError, match="not a finished checkpoint"):
        load_checkpoint(folder)
    resumed = train_model(s, d, "resnet18", 0, tr, va, verbose=False)
    assert not resumed.loaded
    for (k, a), (_, b) in zip(reference.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), k
    assert resumed.meta["history"]["val_accuracy"] == reference.meta["history"]["val_accuracy"]
    assert resumed.meta["history"]["lr"] == reference.meta["history"]["lr"]


def test_a_different_dataset_never_reuses_a_model(tiny):
    from cityviz_helpers.synthetic import DEFAULT_CITIES, City, Cue

    s, d, tr, va = tiny
    changed = tuple(City(c.name, tuple(Cue(q.style, 0.9, q.count) for q in c.cues)) for c in DEFAULT_CITIES)
    d2 = cvdata.load_dataset(s, cities=changed, verbose=False)
    assert d2.fingerprint != d.fingerprint
    assert model_dir(s, d2, "simple", 0) != model_dir(s, d, "simple", 0)
    assert model_dir(s, cvdata.load_dataset(s, verbose=False), "simple", 0) == model_dir(s, d, "simple", 0)


def test_malformed_and_mismatched_checkpoints_are_refused(tiny, tmp_path):
    s, d, tr, va = tiny
    good = train_model(s, d, "simple", 0, tr, va, verbose=False).path
    with pytest.raises(CheckpointError, match="arch 'simple' but 'vgg11'"):
        load_checkpoint(good, arch="vgg11")
    with pytest.raises(CheckpointError, match="classes"):
        load_checkpoint(good, classes=["Tokyo", "Pittsburgh"])
    with pytest.raises(CheckpointError, match="settings hash"):
        load_checkpoint(good, key="0" * 12)
    with pytest.raises(CheckpointError, match="image_size"):
        load_checkpoint(good, image_size=224)

    def broken(name, mutate):
        folder = tmp_path / name
        folder.mkdir()
        for f in ("model.json", "weights.pt"):
            (folder / f).write_bytes((good / f).read_bytes())
        mutate(folder)
        return folder

    bad_json = broken("json", lambda f: (f / "model.json").write_text("{not json"))
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(bad_json)
    no_fields = broken("fields", lambda f: (f / "model.json").write_text(json.dumps({"arch": "simple"})))
    with pytest.raises(CheckpointError, match="lacks"):
        load_checkpoint(no_fields)
    truncated = broken("trunc", lambda f: (f / "weights.pt").write_bytes((f / "weights.pt").read_bytes()[:100]))
    with pytest.raises(CheckpointError, match="cannot be read safely"):
        load_checkpoint(truncated)
    other = build_model("vgg11", 4, 96, "narrow").state_dict()
    wrong = broken("wrong", lambda f: torch.save(other, f / "weights.pt"))
    with pytest.raises(CheckpointError, match="does not fit"):
        load_checkpoint(wrong)
    missing = broken("missing", lambda f: (f / "weights.pt").unlink())
    with pytest.raises(CheckpointError, match="not a finished checkpoint"):
        load_checkpoint(missing)


def test_train_all_trains_each_model_once(tiny, capsys):
    from cityviz_helpers.train import train_all

    s, d, _, _ = tiny
    first = train_all(s, d, archs=["simple"], seeds=[0, 1])
    second = train_all(s, d, archs=["simple"], seeds=[0, 1])
    assert list(first) == ["simple-s0", "simple-s1"]
    assert [m.loaded for m in first.values()] == [False, False]
    assert [m.loaded for m in second.values()] == [True, True]
    out = capsys.readouterr().out
    assert "2 of 2 models to train" in out and out.count("loaded the finished model") == 2


def test_shift_moves_the_image_and_repeats_the_edges():
    from cityviz_helpers.train import _shift

    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    assert torch.equal(_shift(x, torch.tensor([[0, 0]])), x)
    down = _shift(x, torch.tensor([[-1, 0]]))[0, 0]  # content moves down one row
    assert down[0].tolist() == [0, 1, 2, 3] and down[1].tolist() == [0, 1, 2, 3] and down[3].tolist() == [8, 9, 10, 11]
    right = _shift(x, torch.tensor([[0, 2]]))[0, 0]  # content moves left two columns
    assert right[0].tolist() == [2, 3, 3, 3]


def test_changing_one_architectures_learning_rate_keeps_the_others_models(tiny):
    s, d, _, _ = tiny
    lr = s["train"]["lr"]  # one rate for all by default; a mapping gives one per architecture
    other = cv.get_settings(overrides={**TINY, "train": {**TINY["train"], "lr": {
        **{a: lr for a in s["train"]["archs"]}, "simpler": lr * 2}}})
    assert model_dir(other, d, "resnet18", 0) == model_dir(s, d, "resnet18", 0)
    assert model_dir(other, d, "simpler", 0) != model_dir(s, d, "simpler", 0)


def test_recipe_text_says_whether_the_architectures_share_one_recipe(tiny):
    from cityviz_helpers.train import recipe_text

    s, d, _, _ = tiny
    assert not isinstance(cv.get_settings()["train"]["lr"], dict)  # the default: one recipe for all
    shared = recipe_text(s, d)
    assert shared == "one for all: 3 epochs, peak rate 0.002, shifts up to 3 px, random start"
    per = cv.get_settings(overrides={**TINY, "train": {**TINY["train"], "max_shift": {
        "vgg11": 0, "resnet18": 4, "simple": 0, "simpler": 0}}})
    text = recipe_text(per, d)
    assert text.startswith("per architecture: vgg11 3 epochs") and "resnet18 3 epochs, peak rate 0.002, shifts up to 4 px" in text
    assert recipe_text(per, d, ["vgg11", "simple"]).startswith("one for all: ")  # those two train alike
    with pytest.raises(KeyError, match="train.lr has no value for 'resnet18'"):
        recipe_text(cv.get_settings(overrides={**TINY, "train": {**TINY["train"], "lr": {"vgg11": 1e-3}}}), d)


def test_epochs_per_architecture(tiny):
    s, d, train, val = tiny
    per = {"vgg11": 3, "resnet18": 3, "simple": 2, "simpler": 3}
    other = cv.get_settings(overrides={**TINY, "train": {**TINY["train"], "epochs": per}})
    assert model_dir(other, d, "resnet18", 0) == model_dir(s, d, "resnet18", 0)  # 3 epochs either way: one model
    assert model_dir(other, d, "simple", 0) != model_dir(s, d, "simple", 0)
    assert train_model(other, d, "simple", 0, train, val, verbose=False).meta["history"]["epoch"] == [1, 2]


def test_schedules_and_dropout_follow_the_settings(tiny):
    from cityviz_helpers.models import set_dropout
    from cityviz_helpers.train import make_scheduler

    s, d, tr, va = tiny
    model = set_dropout(build_model("simple", 4, 96, "narrow"), 0.2)
    assert [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)] == [0.2, 0.2]
    with pytest.raises(ValueError, match="dropout"):
        set_dropout(model, 1.0)
    cfg = {**s["train"], "schedule": "onecycle", "warmup": 0.25}
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched, rates = make_scheduler(opt, cfg, 1e-3, batches=10, epochs=4), []
    for _ in range(40):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert max(rates) == pytest.approx(1e-3) and rates.index(max(rates)) == 9  # peak at the end of the first quarter
    assert rates[0] < 1e-4 and rates[-1] < 1e-5
    for batches in (1, 2, 3):  # very short runs (smoke tests on a few images) still get a schedule
        short = make_scheduler(opt, cfg, 1e-3, batches, epochs=2)
        for _ in range(2 * batches):
            opt.step()
            short.step()
    with pytest.raises(ValueError, match="schedule"):
        make_scheduler(opt, {**cfg, "schedule": "cosine"}, 1e-3, 10, epochs=4)
    trained = train_model(s, d, "simple", 0, tr, va, verbose=False)
    from cityviz_helpers.train import autocast_dtype, pick_device, precision_name

    # what this machine's device gives: float32 or bfloat16 on a CPU, float16 on CUDA
    assert trained.meta["precision"] == precision_name(autocast_dtype(pick_device(), s["train"]["amp"]))
    assert len(trained.meta["history"]["lr"]) == 3


def test_mixed_precision_only_where_the_hardware_has_it(monkeypatch):
    from cityviz_helpers.train import autocast_dtype, precision_name

    assert autocast_dtype(torch.device("cuda")) == torch.float16
    assert autocast_dtype(torch.device("cuda"), amp=False) is None
    assert autocast_dtype(torch.device("mps")) is None
    for amx, avx512_bf16, expected in ((False, False, None), (True, False, torch.bfloat16),
                                       (False, True, torch.bfloat16), (True, True, torch.bfloat16)):
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v)
        assert autocast_dtype(torch.device("cpu")) == expected, (amx, avx512_bf16)
    assert autocast_dtype(torch.device("cpu"), amp=False) is None
    assert [precision_name(d) for d in (None, torch.bfloat16, torch.float16)] == ["float32", "bfloat16", "float16"]
