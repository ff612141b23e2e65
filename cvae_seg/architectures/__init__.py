"""Networks that are not in smp, built with smp's shape (encoder, decoder, segmentation_head)."""

from cvae_seg.architectures.sohn2015 import Sohn2015

__all__ = ["Sohn2015"]
