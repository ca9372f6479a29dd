import pytest
import torch

from vislab.errors import VislabError
from vislab.models import count_parameters, create_model, model_input_size, registered_models

CLASSIFIERS = sorted(n for n, e in registered_models().items() if e.task == "classification")
SEGMENTERS = sorted(n for n, e in registered_models().items() if e.task == "segmentation")


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_every_registered_classifier_classifies_its_stated_input_size(name):
    size = model_input_size(name)
    model = create_model(name, num_classes=7, in_chans=3, image_size=size).eval()
    assert model(torch.randn(2, 3, size, size)).shape == (2, 7)


def test_cifar_resnet_depths_match_he_et_al():
    # ResNet-20 has 0.27M parameters and ResNet-56 0.85M in the paper.
    assert round(count_parameters(create_model("resnet20", 10)) / 1e6, 2) == 0.27
    assert round(count_parameters(create_model("resnet56", 10)) / 1e6, 2) == 0.86


def test_cifar_resnet18_keeps_32px_resolution_through_the_stem():
    model = create_model("cifar_resnet18", 10)
    stem = model.features
    assert stem.conv1.kernel_size == (3, 3) and stem.conv1.stride == (1, 1)
    assert isinstance(stem.maxpool, torch.nn.Identity)


def test_small_models_accept_grayscale_8px_digits():
    model = create_model("small_cnn", 10, in_chans=1, image_size=8).eval()
    assert model(torch.randn(4, 1, 8, 8)).shape == (4, 10)


def test_timm_models_come_through_the_same_factory():
    model = create_model("timm:resnet18", 3).eval()
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 3)
    assert model_input_size("timm:vit_small_patch16_224") == 224


def test_unknown_model_suggests_close_names():
    with pytest.raises(VislabError, match="unknown model .resnet21.: did you mean .*resnet20"):
        create_model("resnet21", 10)
    with pytest.raises(VislabError, match="unknown timm model 'resnet181'"):
        create_model("timm:resnet181", 10)


def test_unknown_model_option_lists_the_valid_ones():
    with pytest.raises(VislabError, match="has no option 'depthh'.*depth"):
        create_model("plain_cnn", 10, depthh=3)


@pytest.mark.parametrize("name", SEGMENTERS)
def test_every_segmentation_model_returns_full_size_logits(name):
    model = create_model(name, num_classes=5, in_chans=3, image_size=64).eval()
    logits = model(torch.randn(2, 3, 64, 96))
    assert logits.shape == (2, 5, 64, 96)
    assert sum(p.numel() for p in model.encoder.parameters()) > 0
