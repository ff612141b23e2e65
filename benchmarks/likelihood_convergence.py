"""How far an importance-sampled (or Monte Carlo) CLL is from its limit, for one checkpoint.

    python benchmarks/likelihood_convergence.py CONFIG CHECKPOINT [overrides ...]
        [--split test] [--images 500] [--samples 5000] [--method importance] [--out FILE.json]

Draws ``--samples`` log-weights per example once, then cuts them into disjoint blocks of
S = 10, 100, 1,000, ... samples (`cvae_seg.likelihood.block_estimates`): the mean negative
CLL over the first ``--images`` examples for each S (with the spread between blocks) shows
how much of a reported number is the estimator's looseness rather than the model's.
Answers "is S = 100 enough?" for Table 1. A model whose likelihood is exact (a deterministic
objective, the ensemble) gets its exact value instead (``nll_exact``), so that a sampled
model's estimates can be set beside it on the same examples.
"""

from __future__ import annotations

import torch
from checkpoint_probe import Probe, probe_parser

from cvae_seg.likelihood import block_estimates, log_mean_exp


def main(argv: list[str] | None = None) -> dict:
    parser = probe_parser(__doc__, split="test", images=500, batch=100)
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--method", choices=["importance", "monte_carlo"], default="importance")
    args = parser.parse_intermixed_args(argv)
    probe = Probe(args)
    model = probe.model
    exact = model.likelihood_method == "exact"
    if args.method == "importance" and model.likelihood_method == "monte_carlo":
        parser.error(f"{args.checkpoint}: --method importance needs a recognition net, which "
                     "this model has not; give --method monte_carlo")  # fmt: skip
    method = "auto" if exact else args.method
    torch.manual_seed(0)
    weights = torch.cat(
        [
            model.log_likelihood_weights(x, y, args.samples, method, chunk_size=500).cpu()
            for x, y in probe.batches()
        ],
        1,
    )
    if exact:  # the weights are per member (or one), summed rather than sampled
        return probe.report(
            "likelihood_convergence.py", argv, method="exact",
            nll_exact=-log_mean_exp(weights).mean().item(),
        )  # fmt: skip
    sizes = [s for s in (10, 100, 1000, 10000) if s < args.samples] + [args.samples]
    return probe.report(
        "likelihood_convergence.py", argv, method=args.method,
        nll_by_samples=block_estimates(weights, sizes),
    )  # fmt: skip


if __name__ == "__main__":
    main()
