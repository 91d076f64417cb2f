"""Training losses for the infill networks: scored over the hole only, in physical units.

The networks predict rain rates in mm/h (:class:`radinfill.model.unet.InfillNet`). The loss
combines two terms over the loss mask (the pixels that were hidden and have a known truth):

* L1 between ``log1p`` of prediction and truth: robust, weighs light and heavy rain alike;
* a mean squared error in mm/h: alone, the log-L1 term learns a median and damps rain (a
  prototype reached a hole mean of 0.51 mm/h against 1.28 mm/h true); the squared error in
  physical units pulls the intensity back up.

* optionally, the absolute hole-mean bias per sample in mm/h: both terms above are minimised
  in part by damping (a blurred, lower field costs little where the position is uncertain),
  and a sample whose hole mean is too low or too high pays for it here whatever the texture.

The first two terms are means over the masked pixels of the whole batch, not over all pixels (the
seed code divided by all pixels, so the effective learning rate depended on the hole size); the
bias term is a mean over the samples that have masked pixels.
"""

from __future__ import annotations

import torch

#: Default weight of the squared-error term (mm²/h²) against the log1p L1 term (dimensionless).
#: Errors of a few mm/h then count about as much as the log term; heavier rain counts more.
MSE_WEIGHT = 0.1


def hole_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    *,
    mse_weight: float = MSE_WEIGHT,
    bias_weight: float = 0.0,
) -> torch.Tensor:
    """Mean log1p L1 plus weighted mean squared error and hole-mean bias over the masked pixels.

    Parameters
    ----------
    pred : torch.Tensor
        Predicted rain rate in mm/h, >= 0, any shape (typically ``(B, 1, H, W)``).
    target : torch.Tensor
        True rain rate in mm/h, the shape of ``pred``. Values outside ``mask`` are ignored and
        may be NaN (no data).
    mask : torch.Tensor
        Boolean (or 0/1) tensor of the same shape: the pixels that count.
    mse_weight : float
        Weight of the squared-error term in (mm/h)²; 0 gives the pure log1p L1.
    bias_weight : float
        Weight of the mean over samples of ``|hole mean(pred) - hole mean(target)|`` (mm/h);
        samples without masked pixels do not count.

    Returns
    -------
    torch.Tensor
        Scalar loss: ``mean_M |log1p(pred) - log1p(target)| + mse_weight * mean_M (pred -
        target)² + bias_weight * mean_B |mean_M,b (pred - target)|``, where ``mean_M``
        averages over the masked pixels of the whole batch and ``mean_M,b`` over those of
        sample b. An empty mask gives 0 (with a zero, finite gradient), not NaN.

    Raises
    ------
    ValueError
        If the shapes differ or a weight is negative.
    """
    if pred.shape != target.shape or pred.shape != mask.shape:
        raise ValueError(
            f"hole_loss needs equal shapes, got pred {tuple(pred.shape)}, target "
            f"{tuple(target.shape)}, mask {tuple(mask.shape)}"
        )
    if mse_weight < 0 or bias_weight < 0:
        raise ValueError(f"hole_loss: weights must be >= 0, got {mse_weight}, {bias_weight}")
    mask = mask.bool()
    # Replace ignored (possibly NaN) truth first: NaN * 0 would poison the sum and its gradient.
    truth = torch.where(mask, target, pred.detach())
    weight = mask.to(pred.dtype)
    count = weight.sum().clamp(min=1.0)
    log_l1 = ((torch.log1p(pred) - torch.log1p(truth)).abs() * weight).sum() / count
    mse = ((pred - truth).square() * weight).sum() / count
    samples = len(pred) if pred.dim() >= 2 else 1  # dimension 0 is the batch
    per_sample = weight.reshape(samples, -1).sum(1)
    error = ((pred - truth) * weight).reshape(samples, -1).sum(1) / per_sample.clamp(min=1.0)
    bias = error.abs().sum() / (per_sample > 0).sum().clamp(min=1)
    return log_l1 + mse_weight * mse + bias_weight * bias
