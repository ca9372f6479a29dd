"""The pieces of the fast CIFAR-10 recipe: the whitening layer initialised from data, BatchNorm/bias
parameters on their own learning rate, the linear schedule, and the recipe itself on real images."""

import json

import torch

from vislab.models.airbench import Whitening
from vislab.recipes import recipe_path
from vislab.tasks import load_config, prepare

from conftest import QUIET


def test_the_whitening_layer_decorrelates_the_patches_it_was_initialised_on(cifar_jpgs):
    prepared = prepare(load_config(None, [f"data=folder:{cifar_jpgs}", "model=airbench"]))
    whitening = next(m for m in prepared.module.model.modules() if isinstance(m, Whitening))
    assert not whitening.weight.requires_grad and whitening.bias.requires_grad
    train = prepared.datamodule.splits.train.images[:1000]
    images = prepared.module.preprocess.normalise(train)
    out = torch.nn.functional.conv2d(images, whitening.weight[:12].float())  # the 12 eigen-directions
    flat = out.transpose(0, 1).flatten(1)
    moments = flat @ flat.T / flat.shape[1]  # uncentred, as the layer's patch statistics
    variance = moments.diagonal()
    # Unit variance along the strong directions; the weakest (fine JPEG detail, eigenvalues near the
    # layer's epsilon) are damped by lambda / (lambda + eps) rather than blown up.
    assert torch.allclose(variance[:8], torch.ones(8), atol=0.15) and variance.max() < 1.15
    off_diagonal = moments - torch.diag(variance)
    assert off_diagonal.abs().max() < 0.1  # uncorrelated
    assert torch.equal(whitening.weight[12:], -whitening.weight[:12])


def test_batchnorm_and_biases_get_their_own_rate_and_the_same_decay_per_step(cifar_jpgs):
    overrides = ["optim.lr=0.5", "optim.weight_decay=0.001", "optim.bias_lr_scale=64"]
    prepared = prepare(load_config(None, [f"data=folder:{cifar_jpgs}", "model=airbench", *overrides]))
    groups = prepared.module.parameter_groups()
    weights, biases = groups
    assert weights["lr"] == 0.5 and biases["lr"] == 32.0
    assert weights["lr"] * weights["weight_decay"] == biases["lr"] * biases["weight_decay"]
    model = prepared.module.model
    norms = {id(p) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters()}
    named = dict(model.named_parameters())
    in_bias_group = {n for n, p in named.items() if any(p is q for q in biases["params"])}
    assert in_bias_group == {n for n, p in named.items() if n.endswith(".bias") or id(p) in norms}
    assert len(weights["params"]) + len(biases["params"]) == len(named)


def test_the_linear_schedule_warms_up_then_falls_to_min_lr():
    from vislab.config import SchedConfig
    from vislab.optim import create_scheduler

    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    schedule = create_scheduler(optimizer, SchedConfig(name="linear", warmup_epochs=2, min_lr=0.1), 100, 10)
    rates = []
    for _ in range(100):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule["scheduler"].step()
    assert rates[0] < 0.1 and abs(max(rates) - 1.0) < 1e-6 and rates.index(max(rates)) == 20
    assert abs(optimizer.param_groups[0]["lr"] - 0.1) < 1e-6
    assert all(a >= b for a, b in zip(rates[20:], rates[21:]))


def test_the_cpu_recipe_learns_real_cifar_images_and_tta_helps(cli, tmp_path, cifar_jpgs):
    result = cli(
        "train",
        "--config",
        recipe_path("cifar10_fast_cpu"),
        f"data=folder:{cifar_jpgs}",
        "epochs=4",
        "batch_size=128",
        "optim.lr=0.19",
        "val_fraction=0.1",
        f"runs_dir={tmp_path}",
        "name=fast",
        *QUIET,
    )
    assert result.code == 0, result.err
    evaluated = cli("eval", tmp_path / "fast", "--split", "test", "--tta")
    assert evaluated.code == 0, evaluated.err
    tta = json.loads((tmp_path / "fast" / "eval_test.json").read_text())["tta"]
    assert tta["without"] > 0.3, tta  # 2,000 training images, 4 epochs: chance is 0.1
