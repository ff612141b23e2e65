"""MNIST quadrant completion: IDX files, quadrant masks, splits, and the models' likelihoods."""

import gzip
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from cvae_seg.config import load_config
from cvae_seg.data.mnist import MNISTQuadrants, load_mnist, quadrant_mask, read_idx
from cvae_seg.likelihood import log_mean_exp
from cvae_seg.models.mnist import QuadrantCVAE
from cvae_seg.training import dataset_for, load_trained, train

ROOT = Path(__file__).resolve().parents[1]
SHARED_MNIST = ROOT.parent / "shared" / "data" / "mnist"
needs_mnist = pytest.mark.skipif(
    not SHARED_MNIST.is_dir(), reason=f"no MNIST copy at {SHARED_MNIST}"
)


def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def test_quadrant_masks_are_exact():
    one, two, three = (quadrant_mask(q) for q in (1, 2, 3))
    assert one.sum() == 196 and two.sum() == 392 and three.sum() == 588
    assert one[14:, :14].all() and not one[:14].any() and not one[:, 14:].any()  # bottom-left
    assert two[:, :14].all() and not two[:, 14:].any()  # left half
    assert not three[14:, 14:].any() and three.sum() == 784 - 196  # all but bottom-right
    with pytest.raises(ValueError, match="1, 2 or 3"):
        quadrant_mask(4)


def test_idx_files_raw_and_gzip(tmp_path):
    images = np.arange(3 * 28 * 28).reshape(3, 28, 28) % 256
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx(images)))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx(np.array([7, 2, 1])))
    test_images, labels = load_mnist(tmp_path, "test")
    np.testing.assert_array_equal(test_images, images)
    assert labels.tolist() == [7, 2, 1]
    (tmp_path / "cut").write_bytes(_idx(images)[:-10])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(tmp_path / "cut")
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        load_mnist(tmp_path, "train")


def test_items_hide_the_unobserved_quadrants():
    digits = np.random.default_rng(0).integers(0, 256, (2, 28, 28)).astype(np.uint8)
    item = MNISTQuadrants(digits, observed=2)[(1, 123)]
    assert item["image"].shape == (1, 28, 28) and item["mask"].shape == (28, 28)
    torch.testing.assert_close(item["mask"], torch.from_numpy(digits[1] / 255.0).float())
    assert item["image"][0, :, 14:].abs().sum() == 0
    torch.testing.assert_close(item["image"][0, :, :14], item["mask"][:, :14])
    binary = MNISTQuadrants(digits, observed=1, binarize=True)[0]["mask"]
    assert set(binary.unique().tolist()) <= {0.0, 1.0}


@needs_mnist
def test_standard_split():
    train_images, _ = load_mnist(SHARED_MNIST, "train")
    val_images, _ = load_mnist(SHARED_MNIST, "val")
    test_images, _ = load_mnist(SHARED_MNIST, "test")
    assert (len(train_images), len(val_images), len(test_images)) == (50000, 10000, 10000)
    full = read_idx(SHARED_MNIST / "train-images-idx3-ubyte.gz")
    np.testing.assert_array_equal(val_images, full[50000:])
    np.testing.assert_array_equal(train_images, full[:50000])


@pytest.mark.parametrize("scale", [255.0, -1.0])
def test_targets_outside_0_1_are_refused(scale):
    """Bernoulli targets: 0-255 images would give a log-likelihood above zero."""
    model = QuadrantCVAE(observed=1, objective="cvae", hidden=(8,), latent_features=2)
    x, y = torch.rand(2, 1, 28, 28), torch.rand(2, 28, 28)
    with pytest.raises(ValueError, match=r"pixel intensities in \[0, 1\]"):
        model.log_likelihood(x, y * scale, num_samples=2)
    with pytest.raises(ValueError, match="divide by 255"):
        model.loss(x, y * scale)


def test_model_scores_only_the_hidden_pixels():
    model = QuadrantCVAE(observed=3, objective="cvae", hidden=(32,), latent_features=4)
    x = torch.rand(5, 1, 28, 28)
    y = torch.rand(5, 28, 28)
    out = model.loss(x, y)
    assert out.logits[1].shape == (5, 196) and torch.isfinite(out.loss)
    changed = y.clone()
    changed[:, :14] = torch.rand(5, 14, 28)  # observed pixels of the target do not count
    torch.manual_seed(0)
    a = model.log_likelihood(x, y, num_samples=8)
    torch.manual_seed(0)
    torch.testing.assert_close(model.log_likelihood(x, changed, num_samples=8), a)
    samples = model.sample(x, 3)
    assert samples.shape == (3, 5, 196) and not torch.equal(samples[0], samples[1])
    digits = model.complete_digit(x, samples)
    assert digits.shape == (3, 5, 28, 28)
    torch.testing.assert_close(digits[1, :, :14], x[:, 0, :14].expand(5, 14, 28))


def test_config_turns_on_the_importance_weighted_bound_for_the_mlps():
    from cvae_seg.training import build_model

    config = load_config(
        ROOT / "configs" / "mnist_q2_cvae.yaml",
        ["model.mlp_hidden=[32]", "model.latent_channels=4", "model.importance_samples=6"],
    )
    model = build_model(config, 1).eval()
    assert model.importance_samples == 6
    x, y = torch.rand(5, 1, 28, 28), torch.rand(5, 28, 28)
    torch.manual_seed(0)
    out = model.loss(x, y)
    torch.manual_seed(0)
    estimate = model.log_likelihood(x, y, num_samples=6, method="importance", chunk_size=6)
    torch.testing.assert_close(-out.terms["iw_bound"] * 5 * 392, estimate.sum())
    overrides = ["model.mlp_hidden=[32]", "model.importance_samples=6", "model.elbo_share=0.5"]
    mixed = load_config(ROOT / "configs" / "mnist_q2_cvae.yaml", overrides)
    assert build_model(mixed, 1).elbo_share == 0.5


def test_mlp_dropout_regularises_training_only_and_survives_save_load(tmp_path):
    from cvae_seg.hub import from_pretrained
    from cvae_seg.training import build_model

    config = load_config(
        ROOT / "configs" / "mnist_q1_cvae.yaml",
        ["model.mlp_hidden=[32,32]", "model.latent_channels=4", "model.mlp_dropout=0.5"],
    )
    model = build_model(config, 1)
    dropouts = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    # after each hidden layer of the NN, prior, recognition and generation MLPs
    assert len(dropouts) == 8 and all(m.p == 0.5 for m in dropouts)
    x = torch.rand(4, 1, 28, 28)
    observed = torch.ones(4, 196)
    model.train()
    assert not torch.equal(model.baseline(observed), model.baseline(observed))
    model.eval()
    model.save_pretrained(tmp_path / "dropout")
    loaded = from_pretrained(tmp_path / "dropout").eval()
    assert sum(isinstance(m, torch.nn.Dropout) for m in loaded.modules()) == 8
    torch.testing.assert_close(loaded.predict(x), model.predict(x))
    torch.manual_seed(0)
    first = model.sample(x, num_samples=2)
    torch.manual_seed(0)
    torch.testing.assert_close(loaded.sample(x, num_samples=2), first)


@pytest.mark.slow  # a training curve: 35 s on 2 cores
@needs_mnist
def test_short_training_puts_the_cvae_below_the_nn_and_estimators_agree(tmp_path):
    overrides = [
        f"data.root={SHARED_MNIST}",
        "model.mlp_hidden=[300,300]",
        "model.latent_channels=20",
        "train.max_steps=300",
        "train.eval_interval=300",
        "eval.num_samples=10",
    ]
    results = {}
    for name in ("nn", "cvae"):
        config = load_config(ROOT / "configs" / f"mnist_q1_{name}.yaml", overrides)
        results[name] = train(config, tmp_path / name, progress=False)["last"]["nll"]
    assert results["cvae"] < results["nn"] - 2, results

    model, config, _ = load_trained(tmp_path / "cvae" / "best.pt", torch.device("cpu"))
    batch = [dataset_for(config, "val")[i] for i in range(100)]
    x = torch.stack([b["image"] for b in batch])
    y = torch.stack([b["mask"] for b in batch])
    torch.manual_seed(0)
    importance = model.log_likelihood_weights(x, y, 200, "importance", chunk_size=100)
    monte_carlo = model.log_likelihood_weights(x, y, 4000, "monte_carlo", chunk_size=500)

    def mean_and_error(weights):
        estimate = log_mean_exp(weights)  # (B,)
        scaled = (weights - weights.max(0).values).exp()
        per_example = scaled.std(0) / (scaled.mean(0) * math.sqrt(weights.shape[0]))
        return float(estimate.mean()), float(per_example.pow(2).sum().sqrt() / len(per_example))

    (is_mean, is_error), (mc_mean, mc_error) = (
        mean_and_error(importance),
        mean_and_error(monte_carlo),
    )
    assert abs(is_mean - mc_mean) < 3 * math.hypot(is_error, mc_error) + 0.05, (
        is_mean, is_error, mc_mean, mc_error,
    )  # fmt: skip


@needs_mnist
def test_tools_on_a_tiny_mnist_model(tmp_path):
    from cvae_seg.cli import run

    tiny = [f"data.root={SHARED_MNIST}", "model.mlp_hidden=[16]", "model.latent_channels=4",
            "train.max_steps=2", "eval.mc_samples=3", "eval.num_samples=2"]  # fmt: skip
    for name in ("nn", "cvae"):
        config = str(ROOT / "configs" / f"mnist_q2_{name}.yaml")
        run(["train", config, *tiny, "--work-dir", str(tmp_path / name), "--quiet"])
    result = run(["evaluate", config, str(tmp_path / "cvae" / "best.pt"), *tiny, "--split", "test"])
    assert {"nll_monte_carlo", "nll_importance", "nll_stderr_importance"} <= set(result)
    picture = run(
        ["visualize", config, str(tmp_path / "cvae" / "best.pt"), *tiny, "--baseline",
         str(tmp_path / "nn" / "best.pt"), "--num-images", "3", "--num-samples", "4"]
    )  # fmt: skip
    from PIL import Image

    assert Image.open(picture).size == (6 * 30 * 3, 3 * 30 * 3 + 16)  # truth, NN, 4 samples

    import likelihood_convergence

    report = likelihood_convergence.main(
        [config, str(tmp_path / "cvae" / "best.pt"), *tiny, "--images", "12", "--samples", "40",
         "--batch", "5", "--out", str(tmp_path / "convergence.json")]
    )  # fmt: skip
    assert report["images"] == 12 and sorted(report["nll_by_samples"]) == [10, 40]
    assert report["command"].endswith("--out " + str(tmp_path / "convergence.json"))
    assert report["nll_by_samples"][10]["blocks"] == 4
    assert (tmp_path / "convergence.json").is_file()

    # a deterministic model's likelihood is exact: reported as such, not cut into blocks
    nn_config = str(ROOT / "configs" / "mnist_q2_nn.yaml")
    nn_report = likelihood_convergence.main(
        [nn_config, str(tmp_path / "nn" / "best.pt"), *tiny, "--images", "12", "--batch", "5"]
    )
    nn_model, _, _ = load_trained(tmp_path / "nn" / "best.pt", torch.device("cpu"))
    dataset = dataset_for(load_config(nn_config, tiny), "test")
    x = torch.stack([dataset[i]["image"] for i in range(12)])
    y = torch.stack([dataset[i]["mask"] for i in range(12)])
    assert nn_report["method"] == "exact" and "nll_by_samples" not in nn_report
    expected = -nn_model.log_likelihood(x, y).mean().item()
    assert nn_report["nll_exact"] == pytest.approx(expected, rel=1e-5)


def test_block_estimates_average_log_mean_exp_over_disjoint_blocks():
    from cvae_seg.likelihood import block_estimates

    # weights 1 and 3 alternate: blocks of 2 average to 2 exactly; single samples to 1 or 3
    weights = torch.tensor([1.0, 3.0] * 4).log().unsqueeze(1)  # (8, 1)
    result = block_estimates(weights, [1, 2, 8])
    assert result[2]["nll"] == pytest.approx(-math.log(2)) and result[2]["block_std"] == 0
    assert result[8]["nll"] == pytest.approx(-math.log(2)) and result[8]["blocks"] == 1
    assert result[1]["nll"] == pytest.approx(-(math.log(1) + math.log(3)) / 2)
