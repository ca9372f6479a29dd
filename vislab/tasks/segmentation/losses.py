"""Segmentation losses over (B, K, H, W) logits and (B, H, W) labels, all skipping the ignore index."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vislab.config import SegmentationConfig


def focal_loss(
    logits, labels, ignore_index: int, gamma: float, alpha: float | None, weight=None
) -> torch.Tensor:
    """Lin et al.'s focal loss: cross-entropy scaled by (1 - p_true)^gamma, so easy pixels count less."""
    ce = F.cross_entropy(logits, labels, weight=weight, ignore_index=ignore_index, reduction="none")
    valid = labels != ignore_index
    focal = (1 - torch.exp(-ce)) ** gamma * ce
    return (alpha or 1.0) * focal[valid].mean() if valid.any() else logits.sum() * 0


def dice_loss(logits, labels, ignore_index: int, eps: float = 1.0) -> torch.Tensor:
    """1 - mean soft Dice over the classes present in the batch or predicted, on valid pixels only."""
    valid = (labels != ignore_index).unsqueeze(1)
    probs = logits.softmax(1) * valid
    one_hot = F.one_hot(labels.clamp(0, logits.shape[1] - 1), logits.shape[1]).permute(0, 3, 1, 2) * valid
    intersection = (probs * one_hot).sum((0, 2, 3))
    total = probs.sum((0, 2, 3)) + one_hot.sum((0, 2, 3))
    return 1 - ((2 * intersection + eps) / (total + eps)).mean()


def segmentation_loss(
    logits,
    labels,
    config: SegmentationConfig,
    weight: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    ignore = config.ignore_index
    if config.loss == "focal":
        return focal_loss(logits, labels, ignore, config.focal_gamma, config.focal_alpha, weight)
    if config.loss == "dice":
        return dice_loss(logits, labels, ignore)
    ce = F.cross_entropy(logits, labels, weight=weight, ignore_index=ignore, label_smoothing=label_smoothing)
    return ce + dice_loss(logits, labels, ignore) if config.loss == "ce_dice" else ce


def class_weights(masks: list[torch.Tensor], num_classes: int, ignore_index: int) -> torch.Tensor:
    """Median-frequency balancing (Eigen & Fergus): weight_c = median(freq) / freq_c over labelled pixels."""
    counts = torch.zeros(num_classes, dtype=torch.float64)
    for mask in masks:
        valid = mask[mask != ignore_index].long()
        counts += torch.bincount(valid, minlength=num_classes)[:num_classes].double()
    frequency = counts / counts.sum()
    weights = frequency[frequency > 0].median() / frequency.clamp_min(1e-12)
    return torch.where(frequency > 0, weights, torch.zeros_like(weights)).float()
