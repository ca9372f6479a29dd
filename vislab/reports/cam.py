"""Grad-CAM via pytorch-grad-cam: CNNs at their last spatial layer, ViTs with tokens laid out as a grid."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn


def vit_reshape(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """Drops the class/register tokens of a timm ViT and lays the patch tokens out as a (C, H, W) map."""
    prefix = getattr(model, "num_prefix_tokens", 1)

    def reshape(tokens: torch.Tensor) -> torch.Tensor:
        patches = tokens[:, prefix:, :]
        side = int(patches.shape[1] ** 0.5)
        return patches.reshape(tokens.shape[0], side, side, -1).permute(0, 3, 1, 2)

    return reshape


def cam_target(model: nn.Module, example: torch.Tensor) -> tuple[nn.Module, Callable | None] | None:
    """The layer Grad-CAM reads, or None for a model without spatial features (an MLP).
    For CNNs it is the last module, in execution order, whose output is still a spatial map larger than
    1x1: the last residual block of a ResNet, the last conv stage of a plain CNN."""
    backbone = getattr(model, "features", model)  # timm models sit under vislab's head as `features`
    if hasattr(backbone, "blocks") and hasattr(backbone, "patch_embed"):  # a timm vision transformer
        return backbone.blocks[-1].norm1, vit_reshape(backbone)
    spatial: list[nn.Module] = []
    hooks = [
        m.register_forward_hook(lambda m, args, out: spatial.append(m) if is_spatial_map(out) else None)
        for m in model.modules()
        if m is not model
    ]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for hook in hooks:
            hook.remove()
    return (spatial[-1], None) if spatial else None


def is_spatial_map(output) -> bool:
    return isinstance(output, torch.Tensor) and output.ndim == 4 and output.shape[-1] * output.shape[-2] > 1


def grad_cam(model: nn.Module, inputs: torch.Tensor, classes: list[int]) -> np.ndarray | None:
    """Class activation maps (N, H, W) in 0..1 at input resolution for the given target classes."""
    target = cam_target(model, inputs[:1])
    if target is None:
        return None
    layer, reshape = target
    with GradCAM(model=model, target_layers=[layer], reshape_transform=reshape) as cam:
        return cam(input_tensor=inputs, targets=[ClassifierOutputTarget(c) for c in classes])


def overlay(image: np.ndarray, heatmap: np.ndarray) -> np.ndarray:
    """The heatmap blended over an HxWx3 uint8 image."""
    rgb = np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image
    return show_cam_on_image(rgb.astype(np.float32) / 255, heatmap, use_rgb=True, image_weight=0.55)
