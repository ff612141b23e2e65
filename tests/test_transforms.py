"""Occlusion transforms: geometry, seeding, serialisation, recovery, image-only."""

import albumentations as A
import numpy as np
import pytest

from cvae_seg.transforms import (
    GridBlockOcclusion,
    RandomSquareOcclusion,
    grid_block_mask,
    square_mask,
)


def _image(height=60, width=80, channels=3):
    rng = np.random.default_rng(0)
    return rng.uniform(0.1, 1.0, (height, width, channels)).astype(np.float32)


def _run(transform, image, mask=None, seed=0):
    compose = A.Compose([transform], seed=seed, save_applied_params=True)
    data = {"image": image} if mask is None else {"image": image, "mask": mask}
    result = compose(**data)
    return result, result["applied_transforms"][0][1]


def test_squares_are_smaller_than_max_side_and_inside_the_image():
    image = _image()
    transform = RandomSquareOcclusion(max_side=0.4, num_squares=3)
    for seed in range(200):
        _, params = _run(transform, image, seed=seed)
        for top, left, side in params["squares"]:
            assert 0 <= side < 0.4 * 60
            assert 0 <= top <= 60 - side and 0 <= left <= 80 - side


def test_occluded_region_is_recoverable_and_the_mask_untouched():
    image, mask = _image(), np.arange(60 * 80).reshape(60, 80) % 3
    transform = RandomSquareOcclusion(max_side=0.4, min_side=0.2, fill=(0.0, 0.5, 1.0))
    result, params = _run(transform, image, mask)
    region = square_mask(image.shape, params["squares"])
    assert region.any()
    np.testing.assert_array_equal(
        result["image"][region], np.tile([0.0, 0.5, 1.0], (region.sum(), 1))
    )
    np.testing.assert_array_equal(result["image"][~region], image[~region])
    np.testing.assert_array_equal(result["mask"], mask)


def test_seeded_compose_is_reproducible():
    image = _image()
    transform = RandomSquareOcclusion(num_squares=2)
    first = _run(transform, image, seed=7)[0]["image"]
    again = _run(transform, image, seed=7)[0]["image"]
    other = _run(transform, image, seed=8)[0]["image"]
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_side_lengths_are_uniform():
    sides = [
        _run(RandomSquareOcclusion(max_side=0.4), _image(100, 100), seed=s)[1]["squares"][0, 2]
        for s in range(2000)
    ]
    histogram = np.histogram(sides, bins=4, range=(0, 40))[0]
    assert histogram.min() > 0.8 * 500 and histogram.max() < 1.2 * 500


def test_serialisation_round_trip():
    for transform in (
        RandomSquareOcclusion(max_side=0.3, min_side=0.1, num_squares=2, fill=0.5, p=0.7),
        GridBlockOcclusion(block_size=8, drop_prob=0.25, fill=(1.0, 0.0, 0.0)),
    ):
        restored = A.from_dict(A.to_dict(transform))
        assert type(restored) is type(transform)
        assert restored.get_transform_init_args() == transform.get_transform_init_args()
        assert restored.p == transform.p


def test_arguments_are_validated():
    with pytest.raises(ValueError, match="max_side"):
        RandomSquareOcclusion(max_side=1.5)
    with pytest.raises(ValueError, match="min_side"):
        RandomSquareOcclusion(max_side=0.2, min_side=0.3)
    with pytest.raises(ValueError, match="num_squares"):
        RandomSquareOcclusion(num_squares=0)
    with pytest.raises(ValueError, match="drop_prob"):
        GridBlockOcclusion(drop_prob=2)
    with pytest.raises(ValueError, match="one per channel"):
        _run(RandomSquareOcclusion(min_side=0.1, fill=(0.0, 1.0)), _image())


@pytest.mark.parametrize("fill", [300, -1, 0.5, (300, 0, 0)])
def test_a_fill_that_a_uint8_image_cannot_hold_is_refused(fill):
    """numpy would store 300 as 44 and 0.5 as 0 without a word."""
    image = (_image() * 255).astype(np.uint8)
    for transform in (
        RandomSquareOcclusion(min_side=0.1, fill=fill),
        GridBlockOcclusion(drop_prob=1.0, fill=fill),
    ):
        with pytest.raises(ValueError, match=r"does not fit a uint8 image: .* 0\.\.255"):
            _run(transform, image)
    filled, _ = _run(GridBlockOcclusion(drop_prob=1.0, fill=255), image)
    assert (filled["image"] == 255).all()


def test_grid_blocks_are_aligned_and_dropped_at_the_given_rate():
    result, params = _run(GridBlockOcclusion(block_size=4, drop_prob=0.5), _image(64, 64))
    dropped = params["dropped"]
    blocks = dropped.reshape(16, 4, 16, 4)
    assert (blocks.all(axis=(1, 3)) == blocks.any(axis=(1, 3))).all(), "blocks are whole"
    assert result["image"][dropped].max() == 0 and (result["image"][~dropped] > 0).all()
    rates = [grid_block_mask(64, 64, 8, 0.7, np.random.default_rng(s)).mean() for s in range(200)]
    assert np.mean(rates) == pytest.approx(0.7, abs=0.02)
    edge = grid_block_mask(10, 10, 4, 1.0, np.random.default_rng(0))
    assert edge.shape == (10, 10) and edge.all()
    with pytest.raises(ValueError, match="block_size must be a positive integer, got 0"):
        grid_block_mask(8, 8, 0, 0.5, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"drop_prob must be a probability in \[0, 1\], got 2"):
        grid_block_mask(8, 8, 2, 2, np.random.default_rng(0))
    with pytest.raises(TypeError, match=r"rng must be a numpy Generator"):
        grid_block_mask(8, 8, 2, 0.5, 0)
