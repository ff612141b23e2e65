"""A stop injected into training: the n-th training loss call raises KeyboardInterrupt, as
a kill at that update would end the process (for the resume tests)."""

from cvae_seg.models.smp import CVAE


def stop_at_training_step(monkeypatch, step: int) -> None:
    """Make the ``step``-th training loss call of any CVAE raise KeyboardInterrupt."""
    original, calls = CVAE.loss, []

    def stopping(self, x, y):
        if self.training:
            calls.append(1)
            if len(calls) == step:
                raise KeyboardInterrupt("stopped")
        return original(self, x, y)

    monkeypatch.setattr(CVAE, "loss", stopping)
