"""Shared test settings: offline albumentations, deterministic seeds, tiny smp models."""

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import pytest
import torch

TEST_ENCODER = "tu-test_resnet"  # timm's tiny ResNet: 2.3 M parameters with Unet, no weights


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
