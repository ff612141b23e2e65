"""cvae_seg.training.runtime: devices, mixed precision and batch sizes per process."""

from pathlib import Path

import pytest
import torch

from cvae_seg.config import load_config
from cvae_seg.training import autocast_dtype, select_device
from cvae_seg.training.runtime import process_batch_size

ROOT = Path(__file__).resolve().parents[1]


def test_select_device_refuses_what_this_machine_lacks():
    assert select_device("cpu") == torch.device("cpu")
    assert select_device(None).type in {"cpu", "cuda"}
    with pytest.raises(ValueError, match=r"device 'gpu': not a device name; expected cpu"):
        select_device("gpu")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(ValueError, match=rf"device 'cuda:{count}': this machine has {count}"):
        select_device(f"cuda:{count}")


def test_batch_scope_and_autocast_follow_the_config():
    config = load_config(None, ["data.batch_size=8"])
    assert process_batch_size(config, 2) == (8, 4)
    with pytest.raises(ValueError, match=r"data\.batch_size=8 .* among the 3 processes"):
        process_batch_size(config, 3)
    per_process = load_config(None, ["data.batch_size=8", "data.batch_scope=per_process"])
    assert process_batch_size(per_process, 3) == (24, 8)
    cpu = torch.device("cpu")
    assert autocast_dtype(config, cpu) is None
    assert autocast_dtype(load_config(None, ["train.amp=true"]), cpu) == torch.bfloat16
