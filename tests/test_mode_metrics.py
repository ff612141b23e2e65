"""Mode metrics and latent summaries against slow, obviously-correct references."""

import math

import numpy as np
import pytest
import torch

from cvae_seg import metrics
from cvae_seg.modules.latent import GaussianMixture


def _ref_mode_counts(samples, candidates, max_distance):
    counts = [0] * (len(candidates) + 1)
    for sample in samples:
        distances = [int((sample != c).sum()) for c in candidates]
        best = min(distances)
        counts[distances.index(best) if best <= max_distance else len(candidates)] += 1
    return counts


def test_mode_counts_and_total_variation_by_hand():
    candidates = torch.zeros(2, 4, 4, dtype=torch.long)
    candidates[1, :, 2:] = 1  # 8 pixels differ
    far = torch.ones(4, 4, dtype=torch.long)  # 8 from candidate 1, 16 from candidate 0
    near = candidates[1].clone()
    near[0, 0] = 1  # 1 pixel from candidate 1
    samples = torch.stack([candidates[0], candidates[0], near, far])
    counts = metrics.mode_counts(samples, candidates, max_distance=2)
    assert counts.tolist() == [2, 1, 1]  # far is 8 > 2 pixels away: a miss
    # f = (0.5, 0.25, 0.25) against (0.7, 0.3, 0): 0.5 * (0.2 + 0.05 + 0.25)
    assert math.isclose(metrics.total_variation(counts, np.array([0.7, 0.3])), 0.25)
    assert math.isclose(metrics.total_variation([7, 3, 0], [0.7, 0.3]), 0.0)
    assert math.isclose(metrics.total_variation([7, 3], [0.7, 0.3]), 0.0)  # no miss bin
    # a deterministic model that always picks the likelier mode: TV = 1 - max(pi)
    assert math.isclose(metrics.total_variation([10, 0, 0], [0.7, 0.3]), 0.3)
    # a tie goes to the lower index; a sample exactly max_distance away is a hit
    middle = candidates[0].clone()
    middle[:, 2] = 1  # 4 pixels from either candidate
    assert metrics.mode_counts(middle[None], candidates, 4).tolist() == [1, 0, 0]
    assert metrics.mode_counts(middle[None], candidates, 3).tolist() == [0, 0, 1]
    for bad in (-1, float("nan")):  # every sample would be a miss, silently
        with pytest.raises(ValueError, match="max_distance must be a number of pixels >= 0"):
            metrics.mode_counts(middle[None], candidates, bad)


@pytest.mark.parametrize("seed", range(4))
def test_mode_counts_match_a_loop(seed):
    rng = np.random.default_rng(seed)
    candidates = rng.integers(0, 2, (3, 5, 5))
    samples = candidates[rng.integers(0, 3, 30)].copy()
    flips = rng.random(samples.shape) < 0.15
    samples[flips] = 1 - samples[flips]
    counts = metrics.mode_counts(torch.from_numpy(samples), torch.from_numpy(candidates), 3)
    assert counts.tolist() == _ref_mode_counts(samples, candidates, 3)


def test_mode_metrics_validate():
    with pytest.raises(ValueError, match="share"):
        metrics.mode_counts(torch.zeros(2, 3, 3), torch.zeros(2, 4, 4), 1)
    with pytest.raises(ValueError, match="K or K \\+ 1"):
        metrics.total_variation([1, 2, 3, 4], [0.5, 0.5])
    with pytest.raises(ValueError, match="at least one"):
        metrics.total_variation([0, 0, 0], [0.5, 0.5])


def test_candidate_log_likelihoods_match_a_pixel_loop():
    torch.manual_seed(0)
    logits = torch.randn(3, 4, 2, 3)  # S=3, C=4
    candidates = torch.randint(0, 4, (2, 2, 3))
    got = metrics.candidate_log_likelihoods(logits, candidates)
    assert got.shape == (3, 2)
    for s in range(3):
        for k in range(2):
            expected = 0.0
            for i in range(2):
                for j in range(3):
                    column = logits[s, :, i, j].double()
                    c = int(candidates[k, i, j])
                    expected += float(column[c] - torch.logsumexp(column, 0))
            assert float(got[s, k]) == pytest.approx(expected, abs=1e-4)


def _scored(picks: list[int], maps: np.ndarray) -> torch.Tensor:
    """(S, K) log-likelihoods of a perfectly sharp decoder that draws maps[picks]."""
    one_hot = torch.nn.functional.one_hot(torch.from_numpy(maps[picks]).long(), 2)
    logits = (40 * one_hot - 20).permute(0, 3, 1, 2).float()
    return metrics.candidate_log_likelihoods(logits, torch.from_numpy(maps[:2]))


def test_mode_decomposition_separates_mass_from_sharpness():
    a = np.zeros((4, 4), dtype=np.uint8)
    b = a.copy()
    b[1:3, 2:] = 1
    hedge = b.copy()
    hedge[1, 2] = 0  # one pixel off b: explains b best, but p(b|z) ~ 0
    maps = np.stack([a, b, hedge])
    sharp = metrics.ModeDecomposition(2)
    sharp.update(_scored([0, 0, 0, 1, 0, 0, 0, 1], maps))
    result = sharp.compute()
    assert result["mass"] == pytest.approx([0.75, 0.25])
    assert result["sharpness"] == pytest.approx([1.0, 1.0])
    assert result["monte_carlo_p"] == pytest.approx([0.75, 0.25])
    assert result["in_between"] == 0
    blurred = metrics.ModeDecomposition(2)
    blurred.update(_scored([0, 2, 0, 2], maps))
    result = blurred.compute()
    assert result["mass"] == pytest.approx([0.5, 0.5])
    assert result["sharpness"][0] == pytest.approx(1.0) and result["sharpness"][1] < 1e-6
    assert result["monte_carlo_p"][1] < 1e-6 and result["in_between"] == pytest.approx(0.5)
    # pooled over inputs: mass and sharpness over all latents, Monte Carlo p per input
    blurred.update(_scored([1, 1, 1, 1], maps))
    result = blurred.compute()
    assert result["mass"] == pytest.approx([0.25, 0.75])
    assert result["sharpness"][1] == pytest.approx(4 / 6)
    assert result["monte_carlo_p"] == pytest.approx([0.25, 0.5])
    empty = metrics.ModeDecomposition(3)
    empty.update(_scored([0, 0], maps)[:, [0, 1, 1]])
    assert math.isnan(empty.compute()["sharpness"][2])
    with pytest.raises(ValueError, match="expected"):
        empty.update(torch.zeros(4, 2))


def test_prior_scale_summary_of_a_gaussian_and_a_mixture():
    torch.manual_seed(0)
    scales = [torch.rand(3, 2, 4, 4) + 0.1, torch.rand(2, 2, 4, 4) + 0.1]
    priors = [torch.distributions.Normal(torch.zeros_like(s), s) for s in scales]
    summary = metrics.prior_scale_summary(priors)
    pooled = torch.cat(scales)
    expected = [round(float(pooled[:, c].mean()), 3) for c in range(2)]
    assert summary == {"prior_std_per_channel": expected}

    logits = torch.tensor([[0.0, math.log(3.0)], [math.log(3.0), 0.0]])  # weights 1/4, 3/4
    std = torch.stack([torch.full((2, 2, 2), 1.0), torch.full((2, 2, 2), 2.0)], 1)  # (B, M, ...)
    std[:, :, 1] *= 3  # channel 1 three times wider
    mixture = GaussianMixture(logits, torch.zeros_like(std), std)
    summary = metrics.prior_scale_summary([mixture])
    # image 0: 1/4 * 1 + 3/4 * 2 = 1.75; image 1: 3/4 * 1 + 1/4 * 2 = 1.25; mean 1.5
    assert summary["prior_std_per_channel"] == pytest.approx([1.5, 4.5])
    assert summary["prior_component_weights"] == pytest.approx([0.5, 0.5])


def test_mode_decomposition_matches_a_loop_on_random_scores():
    rng = np.random.default_rng(3)
    inputs = [torch.from_numpy(rng.normal(-1.0, 1.5, (6, 3))).clamp(max=0) for _ in range(4)]
    decomposition = metrics.ModeDecomposition(3)
    for scores in inputs:
        decomposition.update(scores)
    result = decomposition.compute()
    hits, inside, marginal, between, total = [0.0] * 3, [0.0] * 3, [0.0] * 3, 0, 0
    for scores in inputs:
        for row in scores.tolist():
            probs = [math.exp(v) for v in row]
            k = row.index(max(row))
            hits[k] += 1
            inside[k] += probs[k]
            between += max(probs) < 0.5
            total += 1
        for k in range(3):
            marginal[k] += sum(math.exp(row[k]) for row in scores.tolist()) / len(scores) / 4
    assert result["mass"] == pytest.approx([h / total for h in hits])
    assert result["sharpness"] == pytest.approx([i / h for i, h in zip(inside, hits, strict=True)])
    assert result["monte_carlo_p"] == pytest.approx(marginal)
    assert result["in_between"] == pytest.approx(between / total)
    decomposition.reset()
    assert decomposition.inputs == 0 and decomposition.hits.sum() == 0


@pytest.mark.parametrize(
    "probs", [(0.7, 0.3), (0.4, 0.3, 0.2, 0.1), (0.25, 0.2, 0.15, 0.12, 0.1, 0.08, 0.06, 0.04)]
)
def test_total_variation_floor_matches_a_simulated_perfect_sampler(probs):
    """The floor is what draws from pi itself score: exact sum over the binomial, and the
    mean of many simulated sample sets (the issue's 0.012 / 0.021 / 0.032 at S = 1,000)."""
    from scipy.stats import binom

    for num_samples in (1, 7, 50, 1000):
        brute = 0.5 * sum(
            (np.abs(np.arange(num_samples + 1) - num_samples * p)
             * binom.pmf(np.arange(num_samples + 1), num_samples, p)).sum()
            for p in probs
        ) / num_samples  # fmt: skip
        assert metrics.total_variation_floor(probs, num_samples) == pytest.approx(brute, rel=1e-9)
    rng = np.random.default_rng(0)
    draws = rng.multinomial(1000, probs, size=4000)
    simulated = [metrics.total_variation(counts, probs) for counts in draws]
    floor = metrics.total_variation_floor(probs, 1000)
    assert floor == pytest.approx(np.mean(simulated), abs=4 * np.std(simulated) / np.sqrt(4000))
    assert round(floor, 3) == {2: 0.012, 4: 0.021, 8: 0.032}[len(probs)]
    # a perfect sampler's TV falls like 1 / sqrt(S)
    assert metrics.total_variation_floor(probs, 100_000) == pytest.approx(floor / 10, rel=0.05)


def test_total_variation_floor_edge_cases():
    assert metrics.total_variation_floor((1.0,), 10) == 0.0  # one mode: every draw is it
    assert metrics.total_variation_floor((0.0, 1.0), 10) == 0.0
    # one draw from (1/2, 1/2): the frequencies are (1, 0) or (0, 1), TV 1/2 either way
    assert metrics.total_variation_floor((0.5, 0.5), 1) == pytest.approx(0.5)
    # an integer S pi (S = 10, pi = 0.3): floor(S pi) + 1 or S pi give the same value
    assert metrics.total_variation_floor((0.3, 0.7), 10) == pytest.approx(
        metrics.total_variation_floor((0.29999999999999, 0.70000000000001), 10)
    )
    with pytest.raises(ValueError, match="sum to 1"):
        metrics.total_variation_floor((0.5, 0.2), 10)
    with pytest.raises(ValueError, match="positive integer"):
        metrics.total_variation_floor((0.5, 0.5), 0)


def test_candidate_log_likelihoods_refuse_candidates_that_do_not_fit_the_logits():
    logits = torch.randn(5, 2, 8, 8)
    with pytest.raises(ValueError, match=r"candidates \(K, H, W\) must match logits"):
        metrics.candidate_log_likelihoods(logits, torch.zeros(3, 8, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"candidates labels must lie in \[0, 2\)"):
        metrics.candidate_log_likelihoods(logits, torch.full((3, 8, 8), 2))
    with pytest.raises(ValueError, match=r"candidates must be a tensor \(K, H, W\)"):
        metrics.candidate_log_likelihoods(logits, torch.zeros(8, 8, dtype=torch.long))
    with pytest.raises(ValueError, match=r"logits must be a tensor \(S, C, H, W\)"):
        metrics.candidate_log_likelihoods(logits[0], torch.zeros(3, 8, 8, dtype=torch.long))


def test_total_variation_refuses_what_is_not_a_distribution():
    with pytest.raises(ValueError, match="probs must be non-negative and sum to 1"):
        metrics.total_variation([3, 3, 0], [0.9, 0.9])
    with pytest.raises(ValueError, match="probs must be non-negative and sum to 1"):
        metrics.total_variation([3, 3], [1.5, -0.5])
    with pytest.raises(ValueError, match="counts must be a vector of non-negative"):
        metrics.total_variation([4, -1, 0], [0.5, 0.5])
    assert metrics.total_variation([3, 3, 0], [0.5, 0.5]) == 0.0


def test_mode_decomposition_refuses_probabilities_for_log_likelihoods():
    decomposition = metrics.ModeDecomposition(3)
    probabilities = torch.tensor([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]])
    with pytest.raises(ValueError, match="log_likelihoods must be log-likelihoods"):
        decomposition.update(probabilities)
    with pytest.raises(ValueError, match="log_likelihoods holds NaN"):
        decomposition.update(torch.full((2, 3), float("nan")))
    assert decomposition.inputs == 0  # nothing counted from the refused inputs
    decomposition.update(probabilities.log())
    assert decomposition.compute()["mass"] == [0.5, 0.5, 0.0]
    with pytest.raises(ValueError, match="num_modes must be a positive integer"):
        metrics.ModeDecomposition(2.0)
