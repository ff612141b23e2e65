"""How much of the label a model's latent carries, for one checkpoint with a recognition net.

    python benchmarks/latent_information.py CONFIG CHECKPOINT [overrides ...]
        [--split val] [--images 100] [--samples 16] [--out FILE.json]

Pixel accuracy of three decodings of the same images: the prediction (`model.predict`, the
prior's mean: what the tables score), single samples of the prior (`model.sample`, the mean
accuracy of one sample), and the recognition net's mean (q(z|x,y), which sees the label).
When the last is far ahead of the first, the decoder has learnt to read part of the label
from z, and the prior, which sees only the image, cannot supply it: the gap is in the prior
net or in the objective, not in the decoder.
"""

from __future__ import annotations

import torch
from checkpoint_probe import Probe, probe_parser


def _hits(logits: torch.Tensor, y: torch.Tensor, scored: torch.Tensor) -> float:
    """Correctly labelled scored pixels of logits ([S,] B, C, H, W), averaged over samples."""
    correct = (logits.argmax(-3) == y) & scored
    return correct.sum().item() * y.numel() / correct.numel()


def accuracies(probe: Probe, samples: int) -> dict:
    """Pixel accuracy (%) of the prediction, of one prior sample and of q's mean decoding."""
    model = probe.model
    hits = {"prediction": 0.0, "prior_sample": 0.0, "posterior_mean": 0.0}
    scored_pixels = 0
    with torch.no_grad():
        for x, y in probe.batches():
            scored = torch.ones_like(y, dtype=torch.bool)
            if model.ignore_index is not None:
                scored = y != model.ignore_index
            posterior_mean = model.posterior(x, y).mean.unsqueeze(0)
            hits["prediction"] += _hits(model.predict(x), y, scored)
            hits["prior_sample"] += _hits(model.sample(x, samples), y, scored)
            hits["posterior_mean"] += _hits(model.decode(x, posterior_mean)[0], y, scored)
            scored_pixels += scored.sum().item()
    return {name: 100 * value / scored_pixels for name, value in hits.items()}


def main(argv: list[str] | None = None) -> dict:
    parser = probe_parser(__doc__, split="val", images=100, batch=10)
    parser.add_argument("--samples", type=int, default=16)
    args = parser.parse_intermixed_args(argv)
    probe = Probe(args)
    if probe.model.recognition_net is None:
        parser.error(f"{args.checkpoint}: the model has no recognition net q(z|x,y) to compare "
                     "with its prior (cvae, hybrid and probunet models have one)")  # fmt: skip
    torch.manual_seed(0)
    return probe.report(
        "latent_information.py", argv, samples=args.samples,
        pixel_accuracy=accuracies(probe, args.samples),
    )  # fmt: skip


if __name__ == "__main__":
    main()
