import json

import numpy as np
import pytest
import torch

from cityviz_helpers import gradcam, segmentation as seg


def test_pixel_counts_inside_a_mask_by_hand():
    labels = np.array([[[1, 1, 2], [2, 2, 0], [3, 3, 3]]])
    mask = np.array([[[True, True, False], [True, False, False], [False, False, True]]])
    inside = seg.pixel_counts(labels, mask)[0]
    whole = seg.pixel_counts(labels)[0]
    assert inside[:4].tolist() == [0, 2, 1, 1] and inside.sum() == 4  # outside pixels are not counted
    assert whole[:4].tolist() == [1, 2, 3, 3] and whole.sum() == 9
    assert seg.pixel_counts(np.zeros((2, 4, 4), int), np.zeros((2, 4, 4), bool)).sum() == 0


def test_pixel_counts_are_per_image_in_a_batch():
    labels = np.stack([np.full((2, 2), 5), np.full((2, 2), 7)])
    counts = seg.pixel_counts(labels)
    assert counts[0, 5] == 4 and counts[0, 7] == 0 and counts[1, 7] == 4


def test_dominant_object_and_the_second_label_rule():
    counts = np.zeros((4, seg.N_LABELS), int)
    counts[0, [3, 5]] = [10, 6]  # 6 > 10 / 2: second label kept
    counts[1, [3, 5]] = [10, 5]  # 5 is not more than half: dropped
    counts[2, [0, 4]] = [50, 2]  # unlabelled is ignored: 4 dominates
    first, second = seg.dominant_objects(counts)
    assert first.tolist() == [3, 3, 4, -1] and second.tolist() == [5, -1, -1, -1]


def test_shares_ratio_and_dominance_for_one_city_by_hand():
    # two images; inside the masks: image 0 has 3 px of class 1, image 1 has 1 px of class 1 and 4 px of class 2
    mask_counts = np.zeros((2, seg.N_LABELS))
    mask_counts[0, 1], mask_counts[1, [1, 2]] = 3, [1, 4]
    image_counts = np.zeros((2, seg.N_LABELS))
    image_counts[0, [1, 2]], image_counts[1, [1, 2]] = [4, 6], [2, 8]
    stats = seg.city_statistics(mask_counts, image_counts, n_boot=200)
    assert stats["share_in_mask"][[1, 2]] == pytest.approx([4 / 8, 4 / 8])
    assert stats["share_in_image"][[1, 2]] == pytest.approx([6 / 20, 14 / 20])
    assert stats["ratio"][1] == pytest.approx((4 / 8) / (6 / 20))
    assert stats["dominant"][[1, 2]] == pytest.approx([0.5, 0.5])  # image 1: class 2 first, class 1 not > half
    assert stats["share_in_mask_low"][1] <= stats["share_in_mask"][1] <= stats["share_in_mask_high"][1]


def test_bootstrap_interval_narrows_with_more_images():
    rng = np.random.default_rng(0)
    def width(n):
        c = np.zeros((n, seg.N_LABELS))
        c[:, 1] = rng.integers(0, 10, n)
        c[:, 2] = rng.integers(0, 10, n)
        b = seg.bootstrap_shares(c, 400)
        return np.percentile(b[:, 1], 97.5) - np.percentile(b[:, 1], 2.5)
    assert width(400) < width(20) / 2


def test_top_classes_ignores_rare_classes():
    stats = {"share_in_mask": np.zeros(seg.N_LABELS), "ratio": np.zeros(seg.N_LABELS)}
    stats["share_in_mask"][[5, 6, 7, 8]] = [0.3, 0.3, 0.001, 0.2]
    stats["ratio"][[5, 6, 7, 8]] = [1.5, 2.0, 9.0, 0.5]
    assert seg.top_classes(stats, k=3, min_share=0.01, above=None) == [6, 5, 8]


def test_a_top_class_needs_its_interval_above_one():
    stats = {"share_in_mask": np.zeros(seg.N_LABELS), "ratio": np.zeros(seg.N_LABELS),
             "ratio_low": np.full(seg.N_LABELS, np.nan)}
    stats["share_in_mask"][[5, 6, 7, 8, 9]] = [0.3, 0.3, 0.2, 0.1, 0.001]
    stats["ratio"][[5, 6, 7, 8, 9]] = [1.5, 3.0, 1.2, 0.8, 9.0]
    stats["ratio_low"][[5, 6, 7, 8, 9]] = [1.1, 0.95, 1.01, 0.5, 4.0]
    # 6 has the highest ratio but its interval reaches below 1; 9 is too rare; 8 is looked at less than its area
    assert seg.top_classes(stats, k=3, min_share=0.01) == [5, 7]
    assert seg.top_classes(stats, k=1, min_share=0.01) == [5]
    truth = {"A": [5, 6], "B": [8]}
    assert seg.cue_recall({"A": stats, "B": stats}, truth, k=3) == pytest.approx((1 / 2 + 0) / 2)


def test_confusion_and_miou_by_hand():
    truth = np.array([1, 1, 2, 2, 0])
    pred = np.array([1, 2, 2, 2, 1])
    conf = seg.confusion(pred, truth)
    iou = seg.iou_per_class(conf)
    assert iou[1] == pytest.approx(1 / 3) and iou[2] == pytest.approx(2 / 3)
    assert seg.mean_iou(conf) == pytest.approx(0.5)  # label 0 ignored


def test_js_distance_on_known_distributions():
    p = np.array([1.0, 0, 0])
    assert seg.js_distance(p, p) == pytest.approx(0)
    assert seg.js_distance(p, np.array([0, 1.0, 0])) == pytest.approx(1)
    assert 0 < seg.js_distance(p, np.array([0.5, 0.5, 0])) < 1


def test_mask_iou():
    a = np.zeros((2, 2, 2), bool)
    b = np.zeros((2, 2, 2), bool)
    a[0, 0, :] = True
    b[0, :, 0] = True  # image 0: 1 shared of 3; image 1: both empty (skipped)
    assert seg.mask_iou(a, b) == pytest.approx(1 / 3)


def _distance_matrix(points):
    return np.linalg.norm(points[:, None] - points[None], axis=-1)


def test_permutation_test_small_p_when_groups_differ():
    rng = np.random.default_rng(0)
    groups = np.repeat(["a", "b", "c", "d"], 3)
    centres = {"a": 0, "b": 5, "c": 10, "d": 15}
    points = np.array([[centres[g] + rng.normal(0, 0.5)] for g in groups])
    r = seg.permutation_test(_distance_matrix(points), groups, n_perm=1000)
    assert r["between"] > r["within"] and r["p_value"] < 0.01


def test_permutation_test_uniformish_p_when_groups_are_alike():
    groups = np.repeat(["a", "b", "c", "d"], 2)
    ps = []
    for seed in range(60):
        points = np.random.default_rng(seed).normal(0, 1, (8, 3))
        ps.append(seg.permutation_test(_distance_matrix(points), groups, n_perm=300, seed=seed)["p_value"])
    ps = np.array(ps)
    assert 0.35 < ps.mean() < 0.65  # uniform on [0, 1] has mean 0.5
    assert 0.02 < (ps < 0.1).mean() < 0.25  # and about 10 % below 0.1


def test_oracle_segmenter_needs_indices_and_returns_the_truth():
    maps = np.arange(2 * 3 * 3).reshape(2, 3, 3) % 5
    oracle = seg.OracleSegmenter(maps)
    assert (oracle(None, [1]) == maps[[1]]).all()
    with pytest.raises(ValueError, match="indices"):
        oracle(torch.zeros(1, 3, 3, 3, dtype=torch.uint8))


def test_ade20k_folder_loads_offline_through_the_real_loader(tmp_path):
    import segmentation_models_pytorch as smp

    torch.manual_seed(0)
    model = smp.Segformer(encoder_name="mit_b0", encoder_weights=None, classes=150)
    model.save_pretrained(str(tmp_path / "segformer"))
    segmenter = seg.load_ade20k_segmenter(tmp_path / "segformer", input_size=64)
    out = segmenter(torch.randint(0, 255, (2, 3, 48, 48), dtype=torch.uint8))
    assert out.shape == (2, 48, 48) and out.min() >= 1 and out.max() <= 150


def test_missing_ade20k_folder_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="data_download.sh --weights"):
        seg.load_ade20k_segmenter(tmp_path / "nothing")


def test_nan_quantiles_match_numpy():
    rng = np.random.default_rng(0)
    x = rng.random((57, 6))
    x[rng.random((57, 6)) < 0.3] = np.nan
    x[:, 5] = np.nan  # a column without values
    x[:-1, 4] = np.nan  # a column with one value
    ours = seg.nan_quantiles(x, (0.025, 0.5, 0.975))
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        ref = np.nanquantile(x, [0.025, 0.5, 0.975], axis=0)
    for a, b in zip(ours, ref):
        np.testing.assert_allclose(a, b, equal_nan=True)


def test_number_of_distinct_groupings():
    assert seg.n_groupings([2, 2, 2, 2]) == 105  # 8! / (2!^4 4!)
    assert seg.n_groupings([3, 3, 3, 3]) == 15400  # 12! / (3!^4 4!)
    assert seg.n_groupings([1, 2, 2]) == 15  # 5! / (1! 2! 2! * 2!)
    for sizes in ([2, 2, 2, 2], [3, 3, 3, 3], [1, 2, 2], [3, 1]):
        rows = seg.groupings(sizes)
        assert len(rows) == seg.n_groupings(sizes)
        canonical = {tuple(np.unique(r, return_index=True)[1].argsort().argsort()[r]) for r in rows}
        assert len(canonical) == len(rows)  # no grouping twice
        assert all(sorted(np.bincount(r)) == sorted(sizes) for r in rows)


def test_exact_test_matches_brute_force_over_every_relabelling():
    import itertools

    rng = np.random.default_rng(3)
    groups = np.repeat(["a", "b", "c", "d"], 2)
    d = _distance_matrix(rng.normal(0, 1, (8, 2)))
    r = seg.permutation_test(d, groups)
    obs = r["between"] - r["within"]
    stats = [np.subtract(*seg.within_between(d, groups[list(p)])[::-1])
             for p in itertools.permutations(range(8))]  # all 40,320 relabellings
    assert r["exact"] and r["n_groupings"] == 105
    assert r["p_value"] == pytest.approx(np.mean(np.array(stats) >= obs - 1e-12))
    assert r["p_floor"] == pytest.approx(1 / 105)


def test_perfectly_separated_groups_sit_at_the_floor():
    groups = np.repeat(["a", "b", "c", "d"], 2)
    points = np.array([[0.0], [0.1], [5], [5.1], [10], [10.1], [15], [15.1]])
    r = seg.permutation_test(_distance_matrix(points), groups)
    assert r["p_value"] == pytest.approx(1 / 105) and r["at_floor"]
    assert "smallest p-value" in seg.p_text(r) and "105 groupings" in seg.p_text(r)
    sampled = seg.permutation_test(_distance_matrix(points), groups, n_perm=999, max_exact=100)
    assert not sampled["exact"] and sampled["p_floor"] == pytest.approx(1 / 1000)
    assert sampled["p_value"] >= sampled["p_floor"] and sampled["p_value"] < 0.03


def test_per_architecture_distances_by_hand():
    groups = ["a", "a", "b", "b"]
    d = np.array([[0, 1, 2, 4], [1, 0, 2, 4], [2, 2, 0, 6], [4, 4, 6, 0]], float)
    t = seg.per_architecture(d, groups)
    assert t.loc["a"].tolist() == pytest.approx([1, 3, 2])  # within 1, between mean(2, 4, 2, 4)
    assert t.loc["b"].tolist() == pytest.approx([6, 3, -3])  # b's seeds differ more than b differs from a


def test_conclusion_of_a_robustness_table():
    def row(name, p, within=0.1, between=0.2):
        return seg.verdict_row(name, {"within": within, "between": between, "p_value": p, "p_floor": 0.01,
                                      "at_floor": p <= 0.01})
    assert seg.conclude([row("x", 0.01), row("y", 0.02)])["status"] == "robust"
    c = seg.conclude([row("x", 0.01), row("y", 0.2), row("z", 0.01, within=0.3)])
    assert c["status"] == "mixed" and c["hold"] == ["x"] and c["do_not_hold"] == ["y", "z"] and c["n_at_floor"] == 2
    assert seg.conclude([row("y", 0.2)])["status"] == "absent"


def test_conclusion_counts_the_rows_trained_with_one_recipe():
    result = {"within": 0.1, "between": 0.2, "p_value": 0.01, "p_floor": 0.01, "at_floor": True}
    shared = "one for all: 8 epochs, peak rate 0.002, shifts up to 2 px, random start"
    per = "per architecture: a 6 epochs, ...; b 10 epochs, ..."
    rows = [seg.verdict_row("x", result, kind="primary", recipe=shared), seg.verdict_row("y", result, recipe=per),
            seg.verdict_row("z", result, kind="control", recipe=shared), seg.verdict_row("w", result)]
    assert [r["recipe"] for r in rows] == [shared, per, shared, None]
    c = seg.conclude(rows)
    assert c["shared_recipe"] == 2 and c["recipes"] == [shared, per]


def test_area_matched_masks_have_one_area_and_keep_the_highest_pixels():
    maps = np.stack([np.arange(16, dtype=np.float32).reshape(4, 4) / 15,
                     np.zeros((4, 4), np.float32),  # flat: no pixel above another
                     np.eye(4, dtype=np.float32)])
    m = seg.top_fraction_masks(maps, 0.25)
    assert m[0].sum() == 4 and m[0][3].all()  # the last row holds the 4 highest values
    assert m[1].sum() == 0
    assert m[2].sum() == 4 and m[2][np.eye(4, dtype=bool)].all()  # the 4 ones of the diagonal
    with pytest.raises(ValueError):
        seg.top_fraction_masks(maps, 0)


def test_chance_masks_come_from_another_image_of_the_same_city():
    n = 9
    masks = np.zeros((n, 3, 3), bool)
    for i in range(n):
        masks[i].flat[i] = True  # each image's mask is told apart by its one pixel
    cities = np.array(["A"] * 4 + ["B"] * 4 + ["C"])
    shuffled = seg.chance_masks(masks, cities, seed=1)
    source = shuffled.reshape(n, -1).argmax(1)
    assert (cities[source] == cities).all()
    assert (source[:8] != np.arange(8)).all() and source[8] == 8  # a city of one image keeps its mask
    assert sorted(source) == list(range(n))  # every mask used once: the same areas


def test_city_shares_pool_each_citys_masked_pixels():
    counts = np.zeros((3, seg.N_LABELS))
    counts[0, [1, 2]], counts[1, 1], counts[2, [0, 3]] = [1, 3], 4, [9, 2]
    s = seg.city_shares(counts, np.array(["A", "A", "B"]), ["A", "B"])
    assert s["A"]["share_in_mask"][[1, 2]] == pytest.approx([5 / 8, 3 / 8])
    assert s["B"]["share_in_mask"][3] == 1.0  # unlabelled (0) is left out


# --------------------------------------------------------------------------
# Controls and common grids: distances with a known answer
# --------------------------------------------------------------------------

ARCH_GRIDS = {"a": 2, "b": 4, "c": 6, "d": 12}  # four "architectures", each explaining on its own grid
SIZE, N_IMAGES = 24, 40


def _mask_test(maps_of: dict, area: float = 0.25) -> dict:
    order = list(maps_of)
    masks = {n: seg.top_fraction_masks(maps_of[n], area) for n in order}
    d = np.zeros((len(order), len(order)))
    for i in range(len(order)):
        for j in range(i + 1, len(order)):
            d[i, j] = d[j, i] = 1 - seg.mask_iou(masks[order[i]], masks[order[j]])
    return seg.permutation_test(d, [n[0] for n in order]), masks, order


def _models(evidence_of) -> dict:
    """Raw grids per model "<arch>-s<seed>": the arch's evidence pooled onto its own grid, plus a
    little seed noise."""
    out = {}
    for arch, g in ARCH_GRIDS.items():
        for seed in (0, 1):
            noise = np.random.default_rng(100 * g + seed).normal(0, 0.02, (N_IMAGES, SIZE, SIZE))
            out[f"{arch}-s{seed}"] = seg.pool_grids(np.clip(evidence_of(arch) + noise, 0, None), (g, g))
    return out


def test_a_control_fires_for_models_that_differ_only_by_grid():
    """Blind maps on each model's own grid: nothing of the image, only grid and area. The test still
    finds "architecture" (p at its floor), which is what a control is there to show."""
    prior = np.random.default_rng(0).random((SIZE, SIZE)).astype(np.float32)
    blind = {f"{a}-s{s}": seg.blind_grid_maps(prior, (g, g), N_IMAGES, SIZE)
             for a, g in ARCH_GRIDS.items() for s in (0, 1)}
    result, masks, order = _mask_test(blind)
    row = seg.verdict_row("blind maps", result, kind="control", grid=seg.grid_text({n: (ARCH_GRIDS[n[0]],) * 2
                                                                                  for n in order}))
    assert result["within"] == 0 and result["between"] > 0.2 and result["at_floor"]
    assert row["verdict"] == "architecture" and row["grid"] == "a 2 x 2, b 4 x 4, c 6 x 6, d 12 x 12"
    primary = seg.verdict_row("real maps", result, kind="primary")
    conclusion = seg.conclude([primary, row])
    assert conclusion["controls"][0]["outcome"] == "fires" and not conclusion["readable"]
    assert conclusion["n_rows"] == 1 and conclusion["primary"] == "real maps"


def test_a_common_grid_removes_a_difference_of_grid_alone():
    """Every model sees the same evidence, each on its own grid: on the native grids the test finds
    "architecture" (the grid is the difference); pooled onto one common grid, it finds none."""
    evidence = np.random.default_rng(1).random((N_IMAGES, SIZE, SIZE)).astype(np.float32)
    grids = _models(lambda arch: evidence)
    native, _, _ = _mask_test({n: gradcam.rescaled_maps(g, SIZE) for n, g in grids.items()})
    common, _, _ = _mask_test({n: seg.common_grid_maps(g, (2, 2), SIZE) for n, g in grids.items()})
    assert seg.verdict_row("native", native)["verdict"] == "architecture"
    assert seg.verdict_row("common grid", common)["verdict"] == "no evidence"


def test_a_common_grid_keeps_a_difference_in_what_the_models_look_at():
    """Each architecture looks at its own quarter of every image: on one common grid the test still
    finds "architecture", and the bootstrap interval of the gap lies above 0."""
    base = np.random.default_rng(2).random((N_IMAGES, SIZE, SIZE)).astype(np.float32) * 0.2
    quarters = {"a": (0, 0), "b": (0, 1), "c": (1, 0), "d": (1, 1)}

    def looks_at(arch):
        out = base.copy()
        y, x = quarters[arch]
        out[:, y * 12:(y + 1) * 12, x * 12:(x + 1) * 12] += 1.0
        return out

    grids = _models(looks_at)
    result, masks, order = _mask_test({n: seg.common_grid_maps(g, (2, 2), SIZE) for n, g in grids.items()})
    ci = seg.bootstrap_gap(order, [n[0] for n in order], masks=masks, n_boot=200)
    row = seg.verdict_row("common grid", result, gap_ci95=ci)
    assert row["verdict"] == "architecture" and 0 < ci[0] <= row["gap"] <= ci[1]


def test_bootstrap_gap_of_object_distances_brackets_the_observed_gap():
    rng = np.random.default_rng(3)
    cities = np.repeat(["x", "y"], 30)
    order = ["a-s0", "a-s1", "b-s0", "b-s1"]
    counts = {}
    for name in order:  # architecture a counts mostly class 1, b mostly class 2; seeds add noise
        base = np.array([0, 8, 2, 1.0]) if name[0] == "a" else np.array([0, 2, 8, 1.0])
        counts[name] = rng.poisson(base * 10, (60, 4)).astype(float)
        counts[name] = np.pad(counts[name], ((0, 0), (0, seg.N_LABELS - 4)))
    shares = {n: seg.city_shares(counts[n], cities, ["x", "y"]) for n in order}
    d = np.array([[seg.model_distance(shares[a], shares[b]) if a != b else 0 for b in order] for a in order])
    within, between = seg.within_between(d, [n[0] for n in order])
    lo, hi = seg.bootstrap_gap(order, [n[0] for n in order], counts=counts, cities=cities, city_names=["x", "y"],
                               n_boot=300)
    assert lo < between - within < hi and lo > 0


def test_a_row_that_cannot_reach_alpha_decides_nothing():
    """2 architectures x 2 seeds: 3 groupings, p never below 1/3. Such a row is "too few models",
    whatever its gap, and the conclusion lists it apart instead of counting it as a failure."""
    d = np.array([[0, 0.1, 0.9, 0.9], [0.1, 0, 0.9, 0.9], [0.9, 0.9, 0, 0.1], [0.9, 0.9, 0.1, 0]])
    result = seg.permutation_test(d, ["a", "a", "b", "b"])
    assert result["p_floor"] == pytest.approx(1 / 3) and result["at_floor"]
    small = seg.verdict_row("two architectures", result, gap_ci95=(0.7, 0.9))
    assert small["verdict"] == "too few models" and small["gap"] == pytest.approx(0.8)
    big = seg.verdict_row("four architectures", {"within": 0.1, "between": 0.9, "p_value": 0.01, "p_floor": 0.01,
                                                 "at_floor": True}, kind="primary")
    c = seg.conclude([big, small])
    assert c["status"] == "robust" and c["n_rows"] == 1 and c["do_not_hold"] == []
    assert c["undecided"] == [{"name": "two architectures", "gap": pytest.approx(0.8), "gap_ci95": [0.7, 0.9],
                               "p_floor": pytest.approx(1 / 3)}]


def test_coinciding_layers_are_found_across_architectures_only():
    grids = {"vgg11": {"last": (6, 6), "previous": (12, 12), "earlier": (24, 24)},
             "resnet18": {"last": (3, 3), "previous": (6, 6), "earlier": (12, 12)},
             "simple": {"last": (2, 2), "previous": (16, 16), "earlier": (40, 40)}}
    found = seg.coinciding_layers(grids)
    assert found == [{"grid": (12, 12), "layers": {"vgg11": "previous", "resnet18": "earlier"}},
                     {"grid": (6, 6), "layers": {"vgg11": "last", "resnet18": "previous"}}]
    assert seg.coinciding_layers({"a": {"last": (2, 2), "previous": (4, 4)}}) == []
