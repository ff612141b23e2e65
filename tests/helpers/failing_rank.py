"""tools/train.py with an error injected into rank 1's second training step (for the test
that a crash in one torchrun process ends the whole job instead of hanging it)."""

import os
import runpy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

from cvae_seg.models.base import ConditionalGenerativeModel  # noqa: E402

original_forward = ConditionalGenerativeModel.forward
training_calls = 0


def failing_forward(self, x, y=None, mode=None):
    global training_calls
    if y is not None and self.training:
        training_calls += 1
        if os.environ.get("RANK") == "1" and training_calls == 2:
            raise RuntimeError("injected failure in rank 1")
    return original_forward(self, x, y, mode)


ConditionalGenerativeModel.forward = failing_forward
sys.argv = [str(ROOT / "tools" / "train.py"), *sys.argv[1:]]
runpy.run_path(sys.argv[0], run_name="__main__")
