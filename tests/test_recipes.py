import json

import pytest

from vislab.cli import main
from vislab.recipes import list_recipes, recipe_path
from vislab.tasks import load_config

from conftest import QUIET

RECIPES = list_recipes()


def test_every_recipe_says_what_it_reproduces():
    assert len(RECIPES) >= 16
    for recipe in RECIPES:
        assert recipe.description and recipe.expect, recipe.name
        load_config(recipe.path)  # valid keys and types


def test_recipes_are_found_by_name(cli):
    assert recipe_path("cifar10_resnet18").name == "cifar10_resnet18.yaml"
    result = cli("train", "--config", "cifar10_resnet19")
    assert result.code == 2 and "unknown recipe" in result.err and "cifar10_resnet18" in result.err
    assert cli("recipes").out.count("expect:") == len(RECIPES)


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.name for r in RECIPES])
def test_every_recipe_trains_a_step_on_real_images(recipe, tmp_path, cifar_jpgs):
    """Each recipe's model, optimizer, schedule, augmentation and fine-tuning mode, for two steps on real
    CIFAR-10 JPEGs at 32 px (ImageNet weights need the hub, so `pretrained` is off here)."""
    config = load_config(recipe.path)
    smoke = [
        f"data=folder:{cifar_jpgs}",
        "image_size=32",
        "pretrained=false",
        "epochs=1",
        "batch_size=8",
        "sched.warmup_epochs=0",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "name=smoke",
        f"runs_dir={tmp_path}",
        *QUIET,
    ]
    if "vit" in config.model:
        smoke.append("model_args={img_size: 32}")
    assert main(["train", "--config", str(recipe.path), *smoke]) == 0
    summary = json.loads((tmp_path / "smoke" / "summary.json").read_text())
    assert summary["epochs_run"] == 1 and summary["params"] > 0
