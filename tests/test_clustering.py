import numpy as np
import pandas as pd
import pytest
import torch

from cityviz_helpers import clustering as cl


def test_connected_regions_of_a_hand_made_mask():
    mask = np.zeros((8, 8), bool)
    mask[0:2, 0:3] = True  # 6 pixels
    mask[5:8, 5:8] = True  # 9 pixels
    mask[4, 4] = True  # touches the 3x3 block diagonally: joins it with 8-connectivity
    mask[0, 7] = True  # a lone pixel
    regions = cl.connected_regions(mask, min_area=1)
    assert [r.sum() for r in regions] == [10, 6, 1]  # largest first
    assert [r.sum() for r in cl.connected_regions(mask, min_area=1, connectivity=4)] == [9, 6, 1, 1]
    assert [r.sum() for r in cl.connected_regions(mask, min_area=2)] == [10, 6]
    assert cl.connected_regions(np.zeros((4, 4), bool)) == []
    assert sum(r.sum() for r in regions) == mask.sum() and not (regions[0] & regions[1]).any()


def test_extract_regions_carries_city_bbox_and_ground_truth():
    maps = np.zeros((2, 6, 6), np.float32)
    maps[0, 0:2, 0:2] = 0.9  # region over a cue (number 1) of label 20
    maps[1, 3:6, 3:6] = 0.7  # region over plain label 7
    maps[1, 0, 0] = 0.8  # too small
    labels = np.full((2, 6, 6), 7, np.uint8)
    labels[0, 0:2, 0:2] = 20
    cues = np.zeros((2, 6, 6), np.uint8)
    cues[0, 0:2, 0:2] = 16 * 1 + 1
    cues[1, 2:4, 2:4] = 16 * 2 + 1  # image 1: a 4-pixel cue instance, only 1 pixel inside the region
    r = cl.extract_regions(maps, 0.5, 2, np.array(["A", "B"]), labels, cues, {1: "flags", 2: "buses"})
    assert r.table[["image", "city", "area", "gt_class", "cue"]].values.tolist() == [[0, "A", 4, 20, "flags"],
                                                                                     [1, "B", 9, 7, "none"]]
    cues[1, 3:5, 3:5] = 16 * 2 + 2  # another instance, all of it inside the region: the region shows it
    r = cl.extract_regions(maps, 0.5, 2, np.array(["A", "B"]), labels, cues, {1: "flags", 2: "buses"})
    assert r.table.cue.tolist() == ["flags", "buses"]
    assert r.table.loc[1, ["y0", "y1", "x0", "x1"]].tolist() == [3, 6, 3, 6]


def test_classifier_features_average_the_covered_cells():
    acts = torch.zeros(1, 2, 2, 2)
    acts[0, 0, 0, 0], acts[0, 1, 1, 1] = 4.0, 8.0
    mask = np.zeros((4, 4), bool)
    mask[0:2, 0:2] = True  # exactly the top-left cell of the 2x2 grid
    regions = cl.Regions(pd.DataFrame({"image": [0]}), [mask])
    assert cl.classifier_features(acts, regions).tolist() == [[4.0, 0.0]]
    mask2 = np.zeros((4, 4), bool)
    mask2[0:2, 0:4] = True  # the two top cells, equally
    assert cl.classifier_features(acts, cl.Regions(pd.DataFrame({"image": [0]}), [mask2])).tolist() == [[2.0, 0.0]]


def test_enrichment_flags_the_over_represented_city_only():
    # cluster 0: 40 of city A out of 50; overall A is half of 200 regions (one region per image)
    clusters = np.array([0] * 50 + [1] * 150)
    cities = np.array(["A"] * 40 + ["B"] * 10 + ["A"] * 60 + ["B"] * 90)
    t = cl.enrichment(clusters, cities, n_perm=999).set_index(["cluster", "city"])
    assert t.loc[(0, "A"), "ratio"] == pytest.approx(0.8 / 0.5)
    assert t.loc[(0, "A"), "ratio_low"] < 1.6 < t.loc[(0, "A"), "ratio_high"]
    assert bool(t.loc[(0, "A"), "enriched"]) and not bool(t.loc[(0, "B"), "enriched"])
    assert not bool(t.loc[(1, "A"), "enriched"])
    # nothing of 999 relabellings reaches 40: p sits at the floor 1 / 1000, shown as "< 0.001"
    assert t.loc[(0, "A"), "p_value"] == pytest.approx(1 / 1000) == t.loc[(0, "A"), "p_floor"]
    assert cl.format_p(t.loc[(0, "A"), "p_value"], 1 / 1000) == "0.001"
    assert cl.format_p(0.0005, 1 / 2000) == "< 0.001" and cl.format_p(0.0123, 1 / 2000) == "0.012"


def test_enrichment_is_not_called_on_a_balanced_split():
    rng = np.random.default_rng(0)
    cities = rng.choice(["A", "B", "C"], 600)
    clusters = rng.integers(0, 4, 600)
    assert not cl.enrichment(clusters, cities, n_perm=499, n_boot=100).enriched.any()


def _null_regions(rng, n_images=120):
    """A null with clustered regions: each image has 1-4 regions, all in one cluster
    drawn for the image, and a city drawn independently of it."""
    per_image = rng.integers(1, 5, n_images)
    images = np.repeat(np.arange(n_images), per_image)
    cities = rng.choice(["A", "B", "C", "D"], n_images)[images]
    clusters = rng.integers(0, 4, n_images)[images]
    return clusters, cities, images


def test_per_image_permutation_is_calibrated_where_regions_are_not_independent():
    rng = np.random.default_rng(0)
    per_image, per_region = [], []
    for _ in range(60):
        clusters, cities, images = _null_regions(rng)
        per_image.append(cl.enrichment(clusters, cities, images, n_perm=199, n_boot=20, seed=1).p_value)
        per_region.append(cl.enrichment(clusters, cities, None, n_perm=199, n_boot=20, seed=1).p_value)
    per_image, per_region = np.concatenate(per_image), np.concatenate(per_region)
    # 960 p-values under the null: about 5 % below 0.05 when images move together ...
    assert 0.02 < (per_image < 0.05).mean() < 0.08
    # ... while treating the regions as independent calls far too many
    assert (per_region < 0.05).mean() > 0.12


def test_enrichment_needs_one_city_per_image():
    with pytest.raises(ValueError, match="one image"):
        cl.enrichment(np.array([0, 1]), np.array(["A", "B"]), np.array([0, 0]))


def test_cue_purity_and_its_floor_in_the_summary():
    cues = np.array(["none"] * 6 + ["flags"] * 3 + ["buses"] * 3)
    labels = np.array([0] * 6 + [1] * 3 + [2] * 3)
    table = pd.DataFrame({"image": np.arange(12), "city": ["A", "B"] * 6, "cue": cues})
    clustering = cl.Clustering(labels, 3, 0.5, {3: 0.5}, np.zeros((12, 2)), np.zeros((3, 2)))
    r = cl.ModelClusters("m", cl.Regions(table, [None] * 12), np.zeros((12, 2)), clustering,
                         cl.enrichment(labels, table.city.to_numpy(), n_perm=99, n_boot=10), {})
    s = r.summary()
    # no-cue regions are a class of their own; one cluster holding everything is right for half of them
    assert s["cue_purity"] == 1.0 and s["cue_purity_floor"] == 0.5 and s["no_cue_share"] == 0.5
    assert s["k"] == 3


def test_purity_and_nmi_on_known_labels():
    clusters = np.array([0, 0, 0, 1, 1, 1])
    assert cl.purity(clusters, np.array([5, 5, 5, 9, 9, 9])) == 1.0
    assert cl.purity(clusters, np.array([5, 5, 9, 9, 9, 9])) == pytest.approx(5 / 6)
    assert cl.nmi(clusters, np.array([5, 5, 5, 9, 9, 9])) == pytest.approx(1.0)
    assert cl.nmi(clusters, np.array([5, 9, 5, 9, 5, 9])) < 0.1
    # the floor: one cluster holding everything is as pure as the most common class is common
    truth = np.array([5, 5, 9, 9, 9, 7])
    assert cl.majority_share(truth) == pytest.approx(3 / 6)
    assert cl.purity(np.zeros(6, int), truth) == pytest.approx(cl.majority_share(truth))


def test_kmeans_finds_well_separated_blobs_and_their_number():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 10, (5, 6))
    x = np.concatenate([c + rng.normal(0, 0.3, (40, 6)) for c in centres])
    result = cl.cluster(x, k_range=(2, 8), pca_dim=4)
    assert result.k == 5 and result.silhouette > 0.7
    truth = np.repeat(np.arange(5), 40)
    assert cl.purity(result.labels, truth) == 1.0
    with pytest.raises(ValueError, match="regions"):
        cl.cluster(x[:2])


def _one_region_table(y0, y1, x0, x1, size=20):
    mask = np.zeros((size, size), bool)
    mask[y0:y1, x0:x1] = True
    table = pd.DataFrame([{"image": 0, "city": "A", "area": int(mask.sum()), "y0": y0, "y1": y1, "x0": x0, "x1": x1}])
    return cl.Regions(table, [mask])


def test_display_patches_are_square_unsmoothed_crops_with_the_outside_dimmed():
    img = np.zeros((1, 20, 20, 3), np.uint8)
    img[0, :, :, 0] = np.arange(20)[None, :] * 10  # red ramps left to right
    img[0, 2:4, 10:16] = 255  # the region: a 2 x 6 white bar
    regions = _one_region_table(2, 4, 10, 16)
    out = cl.display_patches(img, regions, size=40, pad=1, dim=0.5)
    assert out.shape == (1, 40, 40, 3) and out.dtype == np.uint8
    # the square crop is 8 x 8 (6 + 2 * 1) pixels, each shown as a 5 x 5 block: nearest, no new values
    values = set(np.unique(out[0, :, :, 1]))
    assert values <= {255, 64}  # inside: white; outside: black dimmed half way to grey
    assert (out[0, ::5, ::5, 1] == out[0, 4::5, 4::5, 1]).all()  # blocks are flat
    white_rows = np.flatnonzero((out[0, :, :, 1] == 255).any(1))
    assert len(white_rows) == 2 * 5  # the bar's 2 rows, not stretched to the square
    near_edge = cl.display_patches(img, _one_region_table(0, 3, 17, 20), size=16, pad=3)
    assert near_edge.shape == (1, 16, 16, 3)  # the square is moved inside the image, not cut short


def test_spread_points_picks_one_point_per_occupied_cell():
    xy = np.array([[0.0, 0.0], [0.1, 0.1], [0.9, 0.9], [1.0, 1.0], [0.45, 0.55]])
    picked = cl.spread_points(xy, cells=2)
    idx = [i for i, _ in picked]
    assert len(idx) == len(set(idx)) == 3  # three occupied squares of four, one point each
    centres = [c for _, c in picked]
    assert len(set(centres)) == 3
    assert 4 in idx  # (0.45, 0.55) is nearest the centre of its square (0.25, 0.75)
    assert cl.spread_points(np.zeros((0, 2))) == []


def test_cluster_names_say_size_and_main_city():
    table = pd.DataFrame({"image": range(5), "city": ["A", "A", "B", "B", "B"]})
    result = cl.ModelClusters("m", cl.Regions(table, [None] * 5), np.zeros((5, 2)),
                              cl.Clustering(np.array([0, 0, 0, 1, 1]), 2, 0.5, {2: 0.5}, np.zeros((5, 2)),
                                            np.zeros((2, 2))), pd.DataFrame(), {})
    assert cl.cluster_names(result) == {0: "cluster 0: 3 regions, 67% A", 1: "cluster 1: 2 regions, 100% B"}


def test_thumbnail_map_draws_thumbnails_that_do_not_overlap():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cityviz_helpers import plotting

    rng = np.random.default_rng(0)
    xy = rng.normal(size=(300, 2)) * [40, 3]  # very different ranges: the thumbnails must stay square
    patches = rng.integers(0, 255, (300, 8, 8, 3)).astype(np.uint8)
    fig, ax = plt.subplots()
    shown = plotting.thumbnail_map(ax, xy, patches, cells=6, edge_colours=["red"] * 300)
    boxes = [im.get_extent() for im in ax.get_images()]
    assert len(boxes) == len(shown) == len(set(shown)) > 6
    for k, (x0, x1, y0, y1) in enumerate(boxes):
        assert abs((x1 - x0) - (y1 - y0)) < 1e-9  # square in the axes' units, and the aspect is equal
        for a0, a1, b0, b1 in boxes[k + 1:]:
            assert min(x1, a1) <= max(x0, a0) or min(y1, b1) <= max(y0, b0)  # no overlap
    assert all(im.get_interpolation() == "nearest" for im in ax.get_images())
    plt.close(fig)
