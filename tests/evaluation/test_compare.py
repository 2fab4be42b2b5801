"""Two recipes paired from saved evaluations: hand-computable folds and seeds, every refusal, and real evaluate output."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from engine.metrics import bootstrap_mean, bootstrap_recall
from evaluation import compare, evaluate

COLUMNS = ["product_id", "scene", "query_box", "group_rank", "in_group_rank", "room_rank", "scene_rank"]


def _eval(path: Path, fold: str, rows: list[tuple], *, proposer: str = "drawn-boxes:1", catalog: str = "cat1") -> Path:
    """An evaluation folder: ``rows`` of (product, scene, query box, s2p rank, in-group rank, room rank, p2s rank); '' = none."""
    path.mkdir(parents=True)
    (path / "metrics.json").write_text(json.dumps({"scenes_sha": fold, "catalog_fingerprint": catalog,
                                                   "summary": {"protocol": {"detector": proposer}}}))
    with open(path / "pairs.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(COLUMNS)
        w.writerows(rows)
    return path


def _fold0(ranks: list) -> list[tuple]:
    """Fold 0: four pairs on scenes s1 (two) and s2 (two); ``ranks`` the s2p rank of each (in-group, room and p2s the same)."""
    keys = [("p1", "s1"), ("p2", "s1"), ("p3", "s2"), ("p4", "s2")]
    return [(p, s, "0 0 9 9", r, r, r, r) for (p, s), r in zip(keys, ranks)]


def _fold1(ranks: list) -> list[tuple]:
    return [("p5", "s3", "1 1 5 5", *[ranks[0]] * 4), ("p6", "s3", "", *[ranks[1]] * 4)]


def test_seeds_are_averaged_per_pair_and_folds_pooled(tmp_path: Path):
    # A: two seeds on fold 0 (hits at k=10: 1 1 0 0 and 1 0 0 1 -> per pair 1, .5, 0, .5), one on fold 1 (1, 0)
    a = [compare.Evaluation.read(_eval(tmp_path / "a0", "f0", _fold0([1, 3, 50, ""]))),
         compare.Evaluation.read(_eval(tmp_path / "a0s", "f0", _fold0([2, 30, 11, 10]))),
         compare.Evaluation.read(_eval(tmp_path / "a1", "f1", _fold1([5, 99])))]
    # B: hits 0 1 0 0 on fold 0, 1 1 on fold 1
    b = [compare.Evaluation.read(_eval(tmp_path / "b0", "f0", _fold0([12, 4, 70, 80]))),
         compare.Evaluation.read(_eval(tmp_path / "b1", "f1", _fold1([10, 1])))]
    out = compare.compare(a, b, [1, 10], n=500)
    assert (out["pairs"], out["scenes"], out["folds"], out["seeds_a"], out["seeds_b"]) == (6, 3, 2, [2, 1], [1, 1])
    s2p10 = out["s2p"][10]
    assert s2p10["a"] == pytest.approx((1 + .5 + 0 + .5 + 1 + 0) / 6) and s2p10["b"] == pytest.approx(3 / 6)
    assert s2p10["difference"] == pytest.approx(s2p10["a"] - s2p10["b"])
    # the interval resamples the three scenes: its bounds are means of per-scene differences (s1 +.25, s2 +.25, s3 -.5)
    lo, hi = s2p10["ci95"]
    assert -0.5 <= lo <= s2p10["difference"] <= hi <= 0.25
    assert out["s2p"][1]["a"] == pytest.approx(0.5 / 6)  # p1 ranks 1 in one seed, 2 in the other; no other pair first
    assert out["room"] == out["s2p"] and out["in_group"] == out["s2p"] and out["p2s"] == out["s2p"]  # the same ranks in every column here
    assert compare.compare(a, a, [10], n=200)["s2p"][10]["ci95"] == [0.0, 0.0]


def test_a_product_list_keeps_only_its_pairs_or_only_the_others(tmp_path: Path, capsys):
    a0, a1 = _eval(tmp_path / "a0", "f0", _fold0([1, 3, 50, ""])), _eval(tmp_path / "a1", "f1", _fold1([5, 99]))
    b0, b1 = _eval(tmp_path / "b0", "f0", _fold0([12, 4, 70, 80])), _eval(tmp_path / "b1", "f1", _fold1([10, 1]))
    a, b = [compare.Evaluation.read(p) for p in (a0, a1)], [compare.Evaluation.read(p) for p in (b0, b1)]
    listed = compare.compare(a, b, [10], n=200, products={"p1", "p2"}.__contains__)  # fold 1 has none of them: left out
    assert (listed["pairs"], listed["folds"]) == (2, 1)
    assert listed["s2p"][10]["a"] == pytest.approx(1.0) and listed["s2p"][10]["b"] == pytest.approx(0.5)
    others = compare.compare(a, b, [10], n=200, products=lambda p: p not in {"p1", "p2"})
    assert others["pairs"] == 4 and others["s2p"][10]["a"] == pytest.approx(1 / 4) and others["s2p"][10]["b"] == pytest.approx(2 / 4)
    with pytest.raises(compare.CompareError, match="no pair of the products"):
        compare.compare(a, b, [10], n=200, products={"nope"}.__contains__)
    (tmp_path / "new.txt").write_text("# new products\np1\np2\n")
    out = tmp_path / "cmp.json"
    assert compare.main(["--a", str(a0), str(a1), "--b", str(b0), str(b1), "--ks", "10", "--other-products", str(tmp_path / "new.txt"),
                         "--out", str(out)]) == 0
    assert capsys.readouterr().out.startswith("4 pairs, 2 scenes, 2 folds")
    assert json.loads(out.read_text())["products"] == {"file": str(tmp_path / "new.txt"), "only": "others"}


def test_seed_spread_is_over_seed_runs_only_when_every_fold_has_them(tmp_path: Path):
    a0, a0s = (_eval(tmp_path / n, "f0", _fold0(r)) for n, r in (("a0", [1, 3, 50, ""]), ("a0s", [2, 30, 11, 10])))
    a1, a1s = (_eval(tmp_path / n, "f1", _fold1(r)) for n, r in (("a1", [5, 99]), ("a1s", [1, 9])))
    b = [compare.Evaluation.read(_eval(tmp_path / "b0", "f0", _fold0([12, 4, 70, 80]))),
         compare.Evaluation.read(_eval(tmp_path / "b1", "f1", _fold1([10, 1])))]
    a = [compare.Evaluation.read(p) for p in (a0, a1, a0s, a1s)]  # seed run 0: a0 + a1 (3 of 6 hits at 10), run 1: a0s + a1s (4 of 6)
    out = compare.compare(a, b, [10], n=100)
    r = out["s2p"][10]
    assert r["a"] == pytest.approx(7 / 12) and r["a_seed_sd"] == pytest.approx(np.std([3 / 6, 4 / 6], ddof=1))
    assert r["b_seed_sd"] is None  # one seed a fold
    assert "0.583 ± 0.118" in compare.table(out, [10]) and "standard deviation" in compare.table(out, [10])
    uneven = compare.compare(a[:3], b, [10], n=100)["s2p"][10]  # fold 1 has one seed: no seed run is whole
    assert uneven["a_seed_sd"] is None and "±" not in compare.table(compare.compare(a[:3], b, [10], n=100), [10])


def test_pairs_that_cannot_be_paired_are_refused(tmp_path: Path):
    base = compare.Evaluation.read(_eval(tmp_path / "a", "f0", _fold0([1, 2, 3, 4])))
    cases = {
        "never evaluated": _eval(tmp_path / "other-fold", "f1", _fold1([1, 2])),
        "different detectors": _eval(tmp_path / "coco", "f0", _fold0([1, 2, 3, 4]), proposer="yolo:coco"),
        "different catalogs": _eval(tmp_path / "cat2", "f0", _fold0([1, 2, 3, 4]), catalog="cat2"),
        "different pairs": _eval(tmp_path / "fewer", "f0", _fold0([1, 2, 3, 4])[:3]),
        "different boxes": _eval(tmp_path / "moved", "f0", [r[:2] + ("0 0 8 8",) + r[3:] for r in _fold0([1, 2, 3, 4])]),
    }
    for message, path in cases.items():
        with pytest.raises(compare.CompareError, match=message):
            compare.compare([base], [compare.Evaluation.read(path)], [10])
    (tmp_path / "empty").mkdir()
    with pytest.raises(compare.CompareError, match="not an evaluation folder"):
        compare.Evaluation.read(tmp_path / "empty")


def test_bootstrap_mean_is_the_recall_interval_it_generalises():
    rng = np.random.default_rng(3)
    ranks, other = rng.integers(1, 40, 60), rng.integers(1, 40, 60)
    scenes = [f"s{i % 7}" for i in range(60)]
    want = bootstrap_recall(ranks, scenes, [5, 20], other=other, n=300, seed=4)
    lo, hi = bootstrap_mean(np.stack([(ranks <= k) * 1.0 - (other <= k) for k in (5, 20)], 1), scenes, n=300, seed=4)
    assert want == {5: (lo[0], hi[0]), 20: (lo[1], hi[1])}
    lo1, hi1 = bootstrap_mean(np.ones(5), list("aabbc"), n=50)
    assert lo1.shape == () and float(lo1) == float(hi1) == 1.0
    with pytest.raises(ValueError, match="one group per item"):
        bootstrap_mean(np.ones(3), ["a"])


def test_two_real_evaluations_compared_through_the_cli(tmp_path: Path, capsys, caplog):
    """``evaluate`` twice on drawn boxes (two random-weight "models", the same crops), then ``compare``."""
    from tests.evaluation.test_detection import _drawn_file
    from tests.evaluation.test_protocol import SCENES, _write_catalog

    catalog = _write_catalog(tmp_path / "cat", with_boxes=False)
    drawn = _drawn_file(tmp_path / "boxes.json", SCENES)
    common = ["--catalog", str(catalog), "--model", "imagenet", "--weights", "none", "--image-size", "48", "--no-mlflow",
              "--tsne-products", "0", "--grid-queries", "0", "--proposals", str(drawn), "--baseline", "none", "--crop-choice", "confidence"]
    assert evaluate.main([*common, "--out", str(tmp_path / "a")]) == 0
    assert evaluate.main([*common, "--image-size", "64", "--out", str(tmp_path / "b")]) == 0  # another reading, same boxes
    capsys.readouterr()
    assert compare.main(["--a", str(tmp_path / "a"), "--b", str(tmp_path / "b"), "--ks", "1,3", "--out", str(tmp_path / "c.json")]) == 0
    printed = capsys.readouterr().out
    saved = json.loads((tmp_path / "c.json").read_text())
    with open(tmp_path / "a" / "pairs.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert saved["pairs"] == len(rows) and saved["folds"] == 1 and f"{len(rows)} pairs" in printed and "room R@3" in printed
    own = np.mean([r["group_rank"] != "" and float(r["group_rank"]) <= 1 for r in rows])
    assert saved["s2p"]["1"]["a"] == pytest.approx(own)
    assert compare.main(["--a", str(tmp_path / "a"), "--b", str(tmp_path / "b"), "--ks", "ten"]) == 2
    assert "--ks 'ten'" in caplog.text
