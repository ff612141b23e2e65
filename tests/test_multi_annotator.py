"""Several annotations per image: the folder layout, COCO annotator ids, the seeded choice of
one annotation per training item, scoring samples against all of them, and the known-truth
generator's annotators and held-out layouts."""

import json

import numpy as np
import pytest
import torch
from helpers.layouts import (
    MULTI_ANNOTATOR_SPLITS,
    multi_annotator_mask,
    write_coco_annotators,
    write_multi_annotator,
)
from PIL import Image

from cvae_seg import metrics
from cvae_seg.config import DataConfig
from cvae_seg.data import build_dataset, load_coco, load_multi_annotator, load_split
from cvae_seg.data.common import SegmentationArrays, annotator_for_seed
from cvae_seg.data.known_truth import (
    held_out_layouts,
    known_truth_layouts,
    known_truth_split,
    make_known_truth,
)
from cvae_seg.evaluation import evaluate_annotators
from cvae_seg.training import StepSampler
from cvae_seg.training.samplers import make_loader

CPU = torch.device("cpu")


# ----------------------------------------------------------------------------- loading
def test_folder_layout_gives_every_annotation(tmp_path):
    root = write_multi_annotator(tmp_path / "lidc")
    arrays = load_multi_annotator(root, "train", size=20)
    assert arrays.annotations.shape == (4, 3, 20, 20) and arrays.num_annotators == 3
    assert arrays.images.shape == (4, 20, 20, 3)  # grey images become RGB
    assert arrays.names == MULTI_ANNOTATOR_SPLITS["train"]
    assert arrays.classes == ("background", "nodule", "vessel")
    for index in range(4):
        for annotator in range(3):  # annotators in sorted folder order: ann_a, ann_b, ann_c
            expected = multi_annotator_mask(index, annotator)
            np.testing.assert_array_equal(arrays.annotations[index, annotator], expected)
    np.testing.assert_array_equal(arrays.labels, arrays.annotations[:, 0])
    assert load_multi_annotator(root, "test", size=16).annotations.shape == (1, 3, 16, 16)

    config = DataConfig(dataset="multi_annotator", root=str(root), size=20, cache_dir=str(tmp_path))
    item = build_dataset(config, "val", train=False)[1]
    assert item["masks"].shape == (3, 20, 20) and item["masks"].dtype == torch.int64
    torch.testing.assert_close(item["mask"], item["masks"][0])
    torch.testing.assert_close(
        item["masks"][2], torch.from_numpy(multi_annotator_mask(5, 2)).long()
    )
    val = load_multi_annotator(root, "val", size=20)
    np.testing.assert_array_equal(load_split(config, "val").annotations, val.annotations)
    train = build_dataset(config, "train", train=True)
    drawn = train[(2, 777)]
    assert drawn["annotator"] == annotator_for_seed(777, 3) and "masks" not in drawn
    flipped = drawn["mask"].flip(-1)  # the flip (p=0.5) applies to the drawn annotation
    expected = torch.from_numpy(multi_annotator_mask(2, drawn["annotator"])).long()
    assert torch.equal(drawn["mask"], expected) or torch.equal(flipped, expected)


def test_folder_layout_errors_name_the_file(tmp_path):
    root = write_multi_annotator(tmp_path / "lidc")
    (root / "annotations" / "ann_b" / "case2" / "slice_01.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"ann_b/case2/slice_01\.png is missing; every"):
        load_multi_annotator(root, "train")
    mask_path = root / "annotations" / "ann_c" / "case4" / "slice_03.png"
    Image.fromarray(np.full((20, 20), 7, np.uint8)).save(mask_path)
    with pytest.raises(ValueError, match=r"slice_03\.png has values \[7\]; expected .* 0\.\.2"):
        load_multi_annotator(root, "val")
    assert load_multi_annotator(root, "val", ignore_index=7).annotations[0, 2].max() == 7
    Image.fromarray(np.zeros((20, 12), np.uint8)).save(mask_path)
    with pytest.raises(ValueError, match=r"slice_03\.png is 12x20 but its image is 20x20"):
        load_multi_annotator(root, "val")
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(mask_path)
    with pytest.raises(ValueError, match=r"slice_03\.png has mode RGB; expected a single"):
        load_multi_annotator(root, "val")
    (root / "images" / "case6" / "slice_02.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"images/case6/slice_02\.png \(or \.jpg"):
        load_multi_annotator(root, "test")
    (root / "test.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"test\.txt is missing; expected images/"):
        load_multi_annotator(root, "test")
    with pytest.raises(ValueError, match="split must be one of"):
        load_multi_annotator(root, "validation")
    empty = tmp_path / "empty"
    (empty / "annotations").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"has no annotator folders"):
        load_multi_annotator(empty, "train")


def test_16_bit_images_are_refused_naming_the_file_and_mode(tmp_path):
    """PIL's convert("RGB") clips 16-bit values at 255: a CT slice came out all white."""
    root = write_multi_annotator(tmp_path / "lidc")
    path = root / "images" / "case4" / "slice_03.png"
    Image.fromarray(np.full((20, 20), 4000, np.uint16)).save(path)
    assert Image.open(path).mode == "I;16"
    with pytest.raises(ValueError, match=r"slice_03\.png has PIL mode 'I;16' .* convert it to 8"):
        load_multi_annotator(root, "val")


def test_mask_values_and_ignore_index_beyond_8_bits_are_refused(tmp_path):
    """The label maps are uint8: a 16-bit mask's 300 (ignore_index=300) became class 44, and
    with 300 classes, 299 became 43."""
    root = write_multi_annotator(tmp_path / "lidc")
    path = root / "annotations" / "ann_b" / "case5" / "slice_01.png"
    Image.fromarray(np.full((20, 20), 300, np.uint16)).save(path)
    with pytest.raises(ValueError, match=r"data\.ignore_index=300 .*/lidc: expected .* 0\.\.255"):
        load_multi_annotator(root, "val", ignore_index=300)
    with pytest.raises(ValueError, match=r"data\.ignore_index=-100 "):
        load_multi_annotator(root, "train", ignore_index=-100)
    (root / "classes.txt").write_text("".join(f"class{i}\n" for i in range(300)))
    Image.fromarray(np.full((20, 20), 299, np.uint16)).save(path)
    with pytest.raises(ValueError, match=r"slice_01\.png has values \[299\] outside 0\.\.255"):
        load_multi_annotator(root, "val")
    assert load_multi_annotator(root, "train", ignore_index=255).annotations.shape[1] == 3


def test_split_lists_and_annotator_folders_read_as_meant(tmp_path):
    """A hidden folder (.ipynb_checkpoints) was taken for an annotator; a byte-order mark
    made the first image "missing"; a name listed twice was loaded twice."""
    root = write_multi_annotator(tmp_path / "lidc")
    (root / "annotations" / ".ipynb_checkpoints").mkdir()
    names = MULTI_ANNOTATOR_SPLITS["train"]
    (root / "train.txt").write_text("\n".join(names) + "\n", encoding="utf-8-sig")
    arrays = load_multi_annotator(root, "train", size=20)
    assert arrays.names == names and arrays.num_annotators == 3
    (root / "val.txt").write_text("case4/slice_03\ncase5/slice_01\ncase4/slice_03\n")
    with pytest.raises(ValueError, match=r"val\.txt names \['case4/slice_03'\] more than once"):
        load_multi_annotator(root, "val")


@pytest.mark.parametrize("nested", [False, True])
def test_coco_annotator_ids_give_one_map_per_annotator(tmp_path, nested):
    root = write_coco_annotators(tmp_path / "coco", nested=nested)
    arrays = load_coco(root / "annotations" / "train.json", root / "images", size=20)
    assert arrays.annotations.shape == (2, 2, 20, 20)
    # annotators sorted numerically: 1 (width 6), then 3 (width 10)
    assert arrays.annotations[0, 0, 5].sum() == 6 and arrays.annotations[0, 1, 5].sum() == 10
    assert not arrays.annotations[1, 0].any()  # annotator 1 marked nothing on image 2
    assert arrays.annotations[1, 1, 5].sum() == 8
    np.testing.assert_array_equal(arrays.labels, arrays.annotations[:, 0])
    config = DataConfig(dataset="coco", root=str(root), size=20)
    assert build_dataset(config, "val", train=False)[0]["masks"].shape == (2, 20, 20)


def test_coco_annotator_ids_on_some_annotations_only_are_refused(tmp_path):
    root = write_coco_annotators(tmp_path / "coco")
    path = root / "annotations" / "train.json"
    document = json.loads(path.read_text())
    del document["annotations"][1]["annotator"]
    path.write_text(json.dumps(document))
    with pytest.raises(ValueError, match=r"train\.json: annotations \[2\] have no annotator id"):
        load_coco(path, root / "images")
    for annotation in document["annotations"]:
        annotation.pop("annotator", None)
    path.write_text(json.dumps(document))
    assert load_coco(path, root / "images", size=20).annotations is None  # plain COCO


def test_arrays_keep_their_annotations(tmp_path):
    annotations = np.random.default_rng(0).integers(0, 2, (3, 4, 5, 5), dtype=np.uint8)
    arrays = SegmentationArrays(
        np.zeros((3, 5, 5, 3), np.uint8), annotations[:, 0].copy(), ("a", "b"), (), annotations
    )
    arrays.save(tmp_path / "a.npz")
    np.testing.assert_array_equal(
        SegmentationArrays.load(tmp_path / "a.npz").annotations, annotations
    )
    with pytest.raises(ValueError, match="labels must be the first annotation"):
        SegmentationArrays(arrays.images, annotations[:, 1].copy(), ("a", "b"), (), annotations)
    with pytest.raises(ValueError, match=r"annotations \(3, 4, 5\) do not match"):
        SegmentationArrays(arrays.images, arrays.labels, ("a", "b"), (), annotations[:, :, 0])


# ----------------------------------------------------------------------------- the choice
def _drawn(dataset, workers: int, steps: int, seed: int = 4) -> list[list[tuple[int, int]]]:
    sampler = StepSampler(len(dataset), batch_size=4, seed=seed)
    loader = make_loader(dataset, 4, workers, CPU, sampler)
    batches = [b for _, b in zip(range(steps), loader, strict=False)]
    return [list(zip(b["index"].tolist(), b["annotator"].tolist(), strict=True)) for b in batches]


def test_annotator_choice_is_the_same_for_any_number_of_workers(tmp_path):
    root = write_multi_annotator(tmp_path / "lidc")
    config = DataConfig(dataset="multi_annotator", root=str(root), size=16, flip=False)
    dataset = build_dataset(config, "train", train=True)
    without = _drawn(dataset, workers=0, steps=6)
    assert _drawn(dataset, workers=2, steps=6) == without
    assert len({a for batch in without for _, a in batch}) > 1  # not one annotator throughout
    resumed = _drawn(build_dataset(config, "train", train=True), workers=0, steps=2)
    assert resumed == without[:2]  # a fresh dataset (a resumed run) draws the same
    # the choice is a function of the sampler's (index, seed) pairs: the same under torchrun
    pairs = [p for _, p in zip(range(24), StepSampler(len(dataset), 4, seed=4), strict=False)]
    shards = [StepSampler(len(dataset), 4, seed=4, rank=r, world_size=2) for r in (0, 1)]
    sharded = [[p for _, p in zip(range(12), s, strict=False)] for s in shards]
    for step in range(6):
        together = sharded[0][2 * step : 2 * step + 2] + sharded[1][2 * step : 2 * step + 2]
        assert [annotator_for_seed(s, 3) for _, s in together] == [a for _, a in without[step]]
        assert together == pairs[4 * step : 4 * step + 4]


def test_every_annotator_is_drawn_about_equally_often():
    sampler = StepSampler(size=50, batch_size=10, seed=1)
    draws = [annotator_for_seed(s, 4) for _, (_, s) in zip(range(8000), sampler, strict=False)]
    counts = np.bincount(draws, minlength=4)
    chi_square = ((counts - 2000) ** 2 / 2000).sum()
    assert chi_square < 16.27, counts  # df = 3, p = 0.001
    assert annotator_for_seed(123, 1) == 0
    with pytest.raises(ValueError, match="num_annotators must be a positive integer"):
        annotator_for_seed(1, 0)


# ----------------------------------------------------------------------------- evaluation
class _FixedSampler:
    """A stand-in model whose S samples are given label maps (S, B, H, W), one-hot logits."""

    ignore_index = None

    def __init__(self, maps: torch.Tensor, num_classes: int) -> None:
        self.maps, self.num_classes = maps, num_classes

    def sample(self, x: torch.Tensor, num_samples: int) -> torch.Tensor:
        start = getattr(self, "drawn", 0)
        self.drawn = (start + num_samples) % len(self.maps)
        maps = self.maps[start : start + num_samples]
        return torch.nn.functional.one_hot(maps, self.num_classes).permute(0, 1, 4, 2, 3).float()


def test_evaluation_scores_samples_against_every_annotation():
    generator = torch.Generator().manual_seed(0)
    references = torch.randint(0, 3, (4, 2, 8, 8), generator=generator)  # A = 4, B = 2
    samples = torch.randint(0, 3, (6, 2, 8, 8), generator=generator)  # S = 6
    batch = {"image": torch.zeros(2, 3, 8, 8), "masks": references.transpose(0, 1)}
    for chunk in (None, 4):  # samples drawn in chunks score alike
        model = _FixedSampler(samples, 3)
        result = evaluate_annotators(
            model, [batch], 3, CPU, sample_counts=(3, 6), chunk_size=chunk, progress=None,
            ncc_samples=5,
        )  # fmt: skip
        # S_NCC of the first 5 samples' softmax (the fake's logits are one-hot maps)
        logits = torch.nn.functional.one_hot(samples[:5], 3).permute(0, 1, 4, 2, 3).float()
        ncc = metrics.uncertainty_ncc(torch.softmax(logits, 2), references)
        assert result["ncc"] == pytest.approx(float(ncc.mean()))
        for count in (3, 6):
            expected = metrics.generalized_energy_distance(samples[:count], references, 3)
            assert result[f"ged_{count}"] == pytest.approx(float(expected.mean()))
            assert result[f"ged_{count}_stderr"] == pytest.approx(
                float(expected.std() / np.sqrt(2))
            )
            matched = metrics.hungarian_matched_iou(samples[:count], references, 3)
            assert result[f"hm_iou_{count}"] == pytest.approx(float(matched.mean()))
    assert result["annotators"] == 4
    perfect = evaluate_annotators(
        _FixedSampler(references, 3), [batch], 3, CPU, sample_counts=(4,), progress=None,
        ncc_samples=0,
    )  # fmt: skip
    within = metrics.generalized_energy_distance(references, references, 3)
    assert perfect["ged_4"] == pytest.approx(float(within.mean())) and abs(perfect["ged_4"]) < 1e-9
    assert perfect["hm_iou_4"] == pytest.approx(1.0) and "hm_iou_16" not in perfect
    assert "ncc" not in perfect  # ncc_samples=0
    with pytest.raises(ValueError, match="sample_counts must be a non-empty list of positive"):
        evaluate_annotators(model, [batch], 3, CPU, sample_counts=(0,), progress=None)


def test_evaluation_runs_a_model_on_known_truth_annotations():
    import cvae_seg

    config = DataConfig(
        dataset="known_truth", size=32, shapes_val=4, known_truth_annotators=3, batch_size=2
    )
    dataset = build_dataset(config, "val", train=False)
    loader = torch.utils.data.DataLoader(dataset, batch_size=2)
    model = cvae_seg.create_model(
        "Unet", encoder_name="tu-test_resnet", encoder_weights=None, classes=2
    )
    result = evaluate_annotators(model, loader, 2, CPU, sample_counts=(2, 5), progress=None)
    assert result["annotators"] == 3
    assert all(np.isfinite(result[k]) for k in ("ged_2", "ged_5", "hm_iou_2", "hm_iou_5"))


# ----------------------------------------------------------------------------- known truth
def test_known_truth_annotations_follow_the_true_frequencies():
    probs = (0.4, 0.3, 0.2, 0.1)
    truth = make_known_truth(500, 32, probs, seed=5, annotators=6)
    annotations = truth.arrays.annotations
    assert annotations.shape == (500, 6, 32, 32)
    chosen = np.take_along_axis(truth.candidates, truth.annotation_modes[..., None, None], 1)
    np.testing.assert_array_equal(annotations, chosen)
    np.testing.assert_array_equal(truth.annotation_modes[:, 0], truth.modes)
    single = make_known_truth(500, 32, probs, seed=5)  # A = 1: the same images and labels
    np.testing.assert_array_equal(single.arrays.images, truth.arrays.images)
    np.testing.assert_array_equal(single.arrays.labels, truth.arrays.labels)
    assert single.arrays.annotations is None
    counts = np.bincount(truth.annotation_modes.ravel(), minlength=4)
    expected = np.array(probs) * counts.sum()
    assert ((counts - expected) ** 2 / expected).sum() < 16.27, counts  # df = 3, p = 0.001
    # annotators of one image are independent draws: they disagree as often as pi says
    disagree = (truth.annotation_modes[:, 1] != truth.annotation_modes[:, 2]).mean()
    assert disagree == pytest.approx(1 - sum(p * p for p in probs), abs=0.07)
    config = DataConfig(dataset="known_truth", size=32, shapes_val=5, known_truth_annotators=4)
    assert build_dataset(config, "val", train=False)[0]["masks"].shape == (4, 32, 32)
    with pytest.raises(ValueError, match="annotators must be a positive integer"):
        make_known_truth(2, 32, probs, annotators=0)


def test_held_out_layouts_never_occur_in_training():
    layouts = known_truth_layouts()
    assert len(layouts) == len(set(layouts)) == 336
    reserved = held_out_layouts(0.25, seed=0)
    assert len(reserved) == 84 and reserved <= set(layouts)
    assert held_out_layouts(0.25, seed=1) != reserved and held_out_layouts(0.0) == frozenset()
    options = dict(size=32, mode_probs=(0.7, 0.3), split_seed=0, holdout=0.25)
    for split, count in (("train", 1500), ("val", 300)):
        truth = known_truth_split(split, count, **options)
        assert not {tuple(row) for row in truth.layouts.tolist()} & reserved
        assert not truth.held_out.any()
    test = known_truth_split("test", 400, **options)
    assert 0.1 < test.held_out.mean() < 0.4  # about the reserved share of the test images
    assert {tuple(r) for r in test.layouts[test.held_out].tolist()} <= reserved
    config = DataConfig(
        dataset="known_truth", size=32, shapes_train=50, known_truth_modes=(0.7, 0.3),
        known_truth_holdout=0.25,
    )  # fmt: skip
    train = known_truth_split("train", 50, **options)
    np.testing.assert_array_equal(load_split(config, "train").images, train.arrays.images)
    # off by default: the splits are those the published numbers were made on
    default = DataConfig(dataset="known_truth", size=32, shapes_val=20)
    plain = make_known_truth(20, 32, default.known_truth_modes, seed=2)
    np.testing.assert_array_equal(load_split(default, "test").images, plain.arrays.images)
    with pytest.raises(ValueError, match="holdout must leave layouts"):
        held_out_layouts(1.0)
