"""Shared test settings: offline albumentations, deterministic seeds, tiny smp models."""

import contextlib
import os
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import pytest
import torch

TEST_ENCODER = "tu-test_resnet"  # timm's tiny ResNet: 2.3 M parameters with Unet, no weights
DEMO_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
# configs/demo.yaml shrunk to a run of seconds: 32 px generated shapes, tiny splits and batches
TINY_DEMO = [
    "data.size=32",
    "data.batch_size=4",
    "data.num_workers=0",
    "data.shapes_train=24",
    "data.shapes_val=8",
    "eval.batch_size=8",
    "eval.num_samples=2",
]


@contextlib.contextmanager
def torch_threads(count: int):
    """Run the body on ``count`` intra-op threads. A run compared bit for bit with one made in
    a subprocess (OMP_NUM_THREADS=1) must use as many threads: the reduction order of a
    convolution, and so its rounding, depends on the thread count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def tiny_demo_config(*overrides: str):
    """The demo config with `TINY_DEMO` and ``overrides`` applied, validated."""
    from cvae_seg.config import load_config

    return load_config(DEMO_CONFIG, [*TINY_DEMO, *overrides])


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
