"""Draw a sample grid from a trained checkpoint.

    python tools/visualize.py CONFIG CHECKPOINT [--num-samples 6] [--num-images 6]
        [--split val] [--occlude 0.0] [--seed 0] [--out grid.png] [key.sub=value ...]

One row per image: input (occlusion outlined), ground truth, prior-mean prediction, K
samples and a per-pixel uncertainty map (entropy of the mean sample). For MNIST quadrant
completion, the paper's Figure 3: truth, the NN's prediction (``--baseline NN_CKPT``) and K
CVAE samples. CONFIG and the overrides set the data (root, split); the model comes from the
checkpoint (a train.py ``.pt`` file or a save_pretrained folder).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("config", type=Path)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--num-samples", type=int, default=6)
    parser.add_argument("--num-images", type=int, default=6)
    parser.add_argument("--split", default="val", choices=["train", "val", "test"])
    parser.add_argument(
        "--occlude", type=float, default=0.0, help="hide a square up to this share of the side"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="MNIST: the NN checkpoint for Figure 3's NN column",
    )
    args = parser.parse_intermixed_args(argv)

    import numpy as np

    from cvae_seg.engine import dataset_for, load_for_evaluation, load_trained, select_device
    from cvae_seg.reporting import atomic_save_image
    from cvae_seg.visualization import quadrant_grid, sample_grid

    device = select_device(args.device)
    model, config, _ = load_for_evaluation(args.checkpoint, args.config, args.overrides, device)
    dataset = dataset_for(config, args.split)
    rng = np.random.default_rng(args.seed)
    count = min(args.num_images, len(dataset))
    indices = sorted(rng.choice(len(dataset), count, replace=False).tolist())
    if config.data.dataset == "mnist":
        baseline = load_trained(args.baseline, device)[0] if args.baseline else None
        grid = quadrant_grid(model, dataset, indices, args.num_samples, baseline, args.seed)
    else:
        grid = sample_grid(model, dataset, indices, args.num_samples, args.occlude, args.seed)
    out = args.out or args.checkpoint.with_name(f"samples_{args.split}.png")
    atomic_save_image(out, grid)
    print(out)
    return out


if __name__ == "__main__":
    main()
