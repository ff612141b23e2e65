"""The one check every count and size goes through (cvae_seg.checks)."""

import numpy as np
import pytest

import cvae_seg
from cvae_seg.checks import integer_at_least, integers_at_least


@pytest.mark.parametrize("value", [0, -3, 2.0, 2.5, "4", None, True, False])
def test_a_count_that_is_not_a_positive_integer_is_named(value):
    with pytest.raises(ValueError, match=rf"^rank must be a positive integer, got {value!r}$"):
        integer_at_least("rank", value)


def test_numpy_integers_are_counts_and_come_back_as_python_ints():
    value = integer_at_least("num_samples", np.int64(7))
    assert value == 7 and type(value) is int
    assert integers_at_least("sizes", (np.int32(3), 5)) == [3, 5]


def test_a_minimum_other_than_one_is_said():
    assert integer_at_least("num_iterations", 0, minimum=0) == 0
    with pytest.raises(ValueError, match="members must be an integer >= 2, got 1"):
        integer_at_least("members", 1, minimum=2)


@pytest.mark.parametrize("values", [[], (), 16, "16", [16, 0], [16, True], None])
def test_a_list_of_counts_must_be_a_nonempty_list_of_them(values):
    with pytest.raises(ValueError, match="sample_counts must be a non-empty list of positive"):
        integers_at_least("sample_counts", values)


def test_a_flag_is_not_taken_for_a_class_count():
    # True passed as 1 before the shared check: a one-class model built without a word
    with pytest.raises(ValueError, match="classes must be a positive integer, got True"):
        cvae_seg.create_model("Unet", encoder_name="resnet18", encoder_weights=None, classes=True)
    with pytest.raises(ValueError, match="in_channels must be a positive integer, got 0"):
        cvae_seg.create_model("Unet", encoder_name="resnet18", in_channels=0)  # not the probe


def test_build_dataset_names_the_config_it_takes():
    from cvae_seg.config import load_config
    from cvae_seg.data import build_dataset

    with pytest.raises(TypeError, match=r"takes a DataConfig \(config.data\).*pass config.data"):
        build_dataset(load_config(), "val", train=False)
