"""One training update, `train_step`, and the checks that stop a run going non-finite.

A NaN or inf anywhere in an update (the batch, the forward pass, the loss, the gradient)
raises FloatingPointError before the optimizer touches the weights, so the weights, the
optimizer state and BatchNorm's statistics stay as they were after the last good step.
"""

from __future__ import annotations

import torch

__all__ = ["train_step"]


def _terms_text(terms: dict[str, torch.Tensor]) -> str:
    return ", ".join(f"{key}={float(value):.4g}" for key, value in terms.items())


def _check_batch(x: torch.Tensor, y: torch.Tensor) -> None:
    for name, tensor in (("input", x), ("target", y)):
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            bad = int((~torch.isfinite(tensor)).sum())
            raise FloatingPointError(f"the {name} batch holds {bad} non-finite values")


def _loss_output(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> object:
    try:
        return model(x, y, mode="loss")
    except ValueError as error:
        # torch.distributions refuses a non-finite mean or scale: the activations overflowed
        head, found, _ = str(error).partition("but found invalid values")
        if not found:
            raise
        raise FloatingPointError(
            f"the forward pass gave non-finite values ({head.strip().rstrip(',')}): the "
            "weights have diverged (is train.lr too high?) or the inputs are out of range"
        ) from None


def train_step(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None = None,
    grad_clip: float | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> dict[str, float]:
    """One update on a batch: x (B, C, H, W) inputs, y (B, H, W) targets.

    ``model`` is a `ConditionalGenerativeModel` or a wrapper of one (DistributedDataParallel):
    the loss goes through ``model(x, y, mode="loss")`` so that a wrapper's hooks run. Then
    backward (through ``scaler`` for fp16 autocast), gradient-norm clipping at ``grad_clip``
    when given, and the optimizer step. The learning-rate scheduler is the caller's.

    Returns the loss terms as floats. A batch with non-finite values (which would also spoil
    BatchNorm's running statistics), a forward pass or loss gone non-finite, or a non-finite
    gradient raises FloatingPointError naming the count or the terms, before the optimizer
    step. (Under fp16 loss scaling an inf gradient is the scaler's to handle: it skips the
    step and lowers the scale.)
    """
    _check_batch(x, y)
    enabled = autocast_dtype is not None
    with torch.autocast(x.device.type, dtype=autocast_dtype, enabled=enabled):
        out = _loss_output(model, x, y)
    if not torch.isfinite(out.loss):
        raise FloatingPointError(
            f"the loss is {float(out.loss.detach())} ({_terms_text(out.terms)})"
        )
    if scaler is None:
        scaler = torch.amp.GradScaler(x.device.type, enabled=False)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(out.loss).backward()
    if grad_clip is not None:
        scaler.unscale_(optimizer)
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    elif not scaler.is_enabled():
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads)
    if not scaler.is_enabled() and not torch.isfinite(norm):
        raise FloatingPointError(f"the gradient norm is {float(norm)} ({_terms_text(out.terms)})")
    scaler.step(optimizer)
    scaler.update()
    return {key: float(value) for key, value in out.terms.items()}
