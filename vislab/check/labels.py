"""Label issues: images whose given label disagrees with what the data says. Features come from a frozen
ImageNet backbone (the offline EfficientNet-Lite0 weights) or from a run's own model; a logistic
regression, cross-validated, gives every image out-of-fold class probabilities; cleanlab's
`find_label_issues` ranks the suspects (Northcutt et al., confident learning)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from cleanlab.filter import find_label_issues
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from vislab.check.inventory import Item
from vislab.errors import VislabError
from vislab.preprocess import Preprocess

BACKBONE = "tf_efficientnet_lite0"  # the architecture the packaged TensorFlow weights were trained with
FEATURE_SIZE = 128  # pixels: small images are upsampled to where ImageNet features mean something
FOLDS = 5


def backbone_features(items: list[Item], batch_size: int = 64) -> np.ndarray:
    """Pooled features of the frozen backbone for every item, in item order."""
    from vislab.models.timm_models import PACKAGED_WEIGHTS, pretrained_backbone

    # Channels-last: oneDNN's convolutions run about twice as fast on a CPU, with the same features.
    model = pretrained_backbone(BACKBONE, 3).eval().to(memory_format=torch.channels_last)
    weights = PACKAGED_WEIGHTS[BACKBONE]
    preprocess = Preprocess(3, FEATURE_SIZE, weights.mean, weights.std)
    features = []
    with torch.inference_mode():
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            images = torch.stack([preprocess.read(item_image(item)) for item in chunk])
            images = preprocess.normalise(images).contiguous(memory_format=torch.channels_last)
            features.append(model(images))
    return torch.cat(features).numpy()


def item_image(item: Item) -> Path | np.ndarray:
    """An item's file, or its pixels for a built-in dataset held in memory."""
    return item.path if item.path is not None else item.image


def out_of_fold_probabilities(features: np.ndarray, labels: np.ndarray, seed: int = 0) -> np.ndarray:
    counts = np.bincount(labels)
    folds = int(min(FOLDS, counts[counts > 0].min()))
    if folds < 2:
        raise VislabError("label issues need at least two images of every class")
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, C=0.1))
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    return cross_val_predict(probe, features, labels, cv=splitter, method="predict_proba")


def label_issues(items: list[Item], num_classes: int) -> list[dict]:
    """Suspects, most suspicious first: item index, given label, suggested label, the given label's
    out-of-fold probability."""
    usable = [i for i, item in enumerate(items) if item.problem is None]
    labels = np.array([items[i].label for i in usable])
    if len(np.unique(labels)) < num_classes:
        raise VislabError("label issues need images of every class")
    probabilities = out_of_fold_probabilities(backbone_features([items[i] for i in usable]), labels)
    # n_jobs=1: cleanlab's default forks a multiprocessing pool, and a fork from a threaded process (the
    # web UI's server, torch's thread pools) can deadlock in the child: the UI's audit hung for good.
    ranked = find_label_issues(labels, probabilities, return_indices_ranked_by="self_confidence", n_jobs=1)
    return [
        {
            "item": usable[i],
            "given": int(labels[i]),
            "suggested": int(probabilities[i].argmax()),
            "given_probability": round(float(probabilities[i, labels[i]]), 4),
            "suggested_probability": round(float(probabilities[i].max()), 4),
        }
        for i in ranked
    ]
