import pytest
import yaml

from vislab.config import dotted_keys
from vislab.errors import VislabError
from vislab.tasks import load_config


def test_defaults_train_the_embedded_digits_with_a_small_cnn():
    config = load_config()
    assert (config.data, config.model, config.runs_dir) == ("digits", "small_cnn", "runs")


def test_overrides_use_the_yaml_names_with_dots_for_sections():
    config = load_config(
        None,
        [
            "model=resnet20",
            "epochs=3",
            "optim.lr=0.2",
            "sched.milestones=[1,2]",
            "trainer.precision=bf16-mixed",
            "model_args={width: 8}",
        ],
    )
    assert config.model == "resnet20" and config.epochs == 3
    assert config.optim.lr == 0.2 and config.sched.milestones == [1, 2]
    assert config.trainer.precision == "bf16-mixed" and config.model_args == {"width": 8}


def test_a_recipe_file_is_overridden_by_the_command_line(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        yaml.safe_dump({"model": "resnet20", "epochs": 30, "optim": {"lr": 0.1, "name": "sgd"}})
    )
    config = load_config(recipe, ["epochs=2"])
    assert (config.model, config.epochs, config.optim.lr) == ("resnet20", 2, 0.1)


def test_unknown_key_suggests_the_closest():
    with pytest.raises(VislabError, match="unknown config key 'optim.lrr': did you mean optim.lr"):
        load_config(None, ["optim.lrr=0.1"])


def test_wrong_type_names_the_key():
    with pytest.raises(VislabError, match="config key 'epochs'"):
        load_config(None, ["epochs=many"])
    # A key of several forms names the key, not a form, and every form it takes.
    with pytest.raises(VislabError, match="config key 'augment.hflip': .*valid boolean.* or .*'alternate'"):
        load_config(None, ["augment.hflip=sometimes"])


def test_numbers_given_for_text_keys_stay_text():
    assert load_config(None, ["name=123"]).name == "123"


def test_every_dotted_key_is_settable():
    keys = dotted_keys()
    assert {"data", "model", "epochs", "batch_size", "seed", "name", "runs_dir", "optim.lr"} <= set(keys)


def test_print_config_shows_the_resolved_yaml(cli):
    result = cli("train", "--print-config", "model=resnet8", "optim.lr=0.3")
    printed = yaml.safe_load(result.out)
    assert result.code == 0 and printed["model"] == "resnet8" and printed["optim"]["lr"] == 0.3
