"""cvae_seg.reporting: the hardware line every benchmark report carries."""

import pytest
import torch

from cvae_seg.reporting import cpu_name, describe_hardware


@pytest.mark.parametrize(("threads", "words"), [(1, "1 thread)"), (2, "2 threads)")])
def test_cpu_line_names_the_thread_count_in_words(threads: int, words: str) -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        line = describe_hardware(torch.device("cpu"))
    finally:
        torch.set_num_threads(before)
    assert line.startswith(f"CPU ({cpu_name()}, ") and line.endswith(words)


def test_cpu_name_falls_back_to_the_architecture_without_proc(monkeypatch) -> None:
    """Off Linux (no /proc/cpuinfo) the line still names something, never an empty name."""
    import platform

    import cvae_seg.reporting as reporting

    def unreadable(self, *args, **kwargs):
        raise OSError("no such file")

    monkeypatch.setattr(reporting.Path, "read_text", unreadable)
    monkeypatch.setattr(platform, "processor", lambda: "")
    assert reporting.cpu_name() == (platform.machine() or "unknown CPU")
