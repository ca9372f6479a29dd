"""The pieces of the fast CIFAR-10 recipe: the whitening layer initialised from data, BatchNorm/bias
parameters on their own learning rate, the linear schedule, and the recipe itself on real images."""

import json

import lightning as L
import torch

from vislab.api import train_config
from vislab.lookahead import Lookahead
from vislab.models.airbench import Whitening
from vislab.recipes import recipe_path
from vislab.tasks import load_config, prepare
from vislab.training import train

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
        "test_tta=true",  # scored on the test split as training ends, as `vislab eval --split test --tta`
        *QUIET,
    )
    assert result.code == 0, result.err
    tta = json.loads((tmp_path / "fast" / "eval_test.json").read_text())["tta"]
    assert tta["without"] > 0.3, tta  # 2,000 training images, 4 epochs: chance is 0.1
    lines = result.out.splitlines()
    assert lines[1].startswith("test: loss") and "(500 images)" in lines[1]
    assert lines[2] == f"test-time augmentation: top1 {tta['with']:.4f} against {tta['without']:.4f} " + (
        f"without ({tta['gain'] * 100:+.2f} points)"
    )
    evaluated = cli("eval", tmp_path / "fast", "--split", "test", "--tta")  # the same scores, from the CLI
    assert evaluated.code == 0 and evaluated.out.splitlines() == lines[1:3], evaluated.err


class States(L.Callback):
    """The model's state as training starts and at each epoch's end (what validation and the epoch's
    checkpoint see), and the lookahead's slow copy at that moment."""

    def __init__(self):
        self.start, self.ends, self.slow = None, [], []

    def on_train_start(self, trainer, pl_module) -> None:
        self.start = {k: v.clone() for k, v in pl_module.model.state_dict().items()}

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.ends.append({k: v.clone() for k, v in pl_module.model.state_dict().items()})
        slow = next((c.slow for c in trainer.callbacks if isinstance(c, Lookahead)), None)
        self.slow.append({k: v.clone() for k, v in slow.items()} if slow is not None else None)


def tiny_airbench(cifar_jpgs, runs, name: str, *overrides: str) -> tuple:
    """3 short epochs of a small airbench on real CIFAR-10 JPEGs, its whitening bias frozen after one."""
    states = States()
    keys = [
        f"data=folder:{cifar_jpgs}",
        "model=airbench",
        "model_args={widths: [8, 16, 16], whiten_bias_epochs: 1}",
        "epochs=3",
        "batch_size=64",
        "trainer.limit_train_batches=6",
        f"runs_dir={runs}",
        f"name={name}",
        *QUIET,
        *overrides,
    ]
    run = train(train_config(overrides=keys), callbacks=[states])
    return run, states


def metric_rows(run) -> list[str]:
    return [line.rsplit(",", 1)[0] for line in (run / "metrics.csv").read_text().splitlines()]  # no timing


def test_the_whitening_bias_learns_for_its_epochs_then_stays_and_lookahead_ends_epochs_on_the_slow_copy(
    cifar_jpgs, tmp_path
):
    plain, states = tiny_airbench(cifar_jpgs, tmp_path, "plain")
    bias = [states.start["features.0.bias"], *(end["features.0.bias"] for end in states.ends)]
    assert not torch.equal(bias[0], bias[1])  # learned in epoch 1
    assert torch.equal(bias[1], bias[2]) and torch.equal(bias[2], bias[3])  # frozen from epoch 2
    conv = [end["features.2.0.weight"] for end in states.ends]
    assert not torch.equal(conv[1], conv[2])  # the rest keeps learning

    ahead, states = tiny_airbench(cifar_jpgs, tmp_path, "ahead", "optim.lookahead_after=1")
    assert states.slow[0] is None  # not before its epoch: epoch 1 is the same run
    assert metric_rows(ahead)[:2] == metric_rows(plain)[:2] and metric_rows(ahead) != metric_rows(plain)
    for end, slow in zip(states.ends[1:], states.slow[1:]):
        assert all(torch.equal(end[k], slow[k]) for k in slow)  # each epoch ends on the slow weights
    assert "running_mean" in " ".join(states.slow[-1])  # BatchNorm statistics are averaged too
