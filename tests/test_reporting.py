"""cvae_seg.reporting: the hardware line every benchmark report carries."""

import pytest
import torch

from cvae_seg.reporting import describe_hardware


@pytest.mark.parametrize(("threads", "words"), [(1, "1 thread)"), (2, "2 threads)")])
def test_cpu_line_names_the_thread_count_in_words(threads: int, words: str) -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        line = describe_hardware(torch.device("cpu"))
    finally:
        torch.set_num_threads(before)
    assert line.startswith("CPU (") and line.endswith(words)
