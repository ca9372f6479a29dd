"""Every user mistake exits with code 2 and one line on stderr, with no traceback and no half-written run."""

import pickle
import shutil

import pytest
import torch

from vislab.cli import main

from conftest import QUIET, copy_classes


def assert_one_line_error(result, *phrases):
    assert result.code == 2, result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vislab: error:") and "Traceback" not in result.err
    for phrase in phrases:
        assert phrase in lines[0]


@pytest.fixture
def runs(tmp_path):
    return tmp_path / "runs"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    assert (
        main(["train", f"runs_dir={runs}", "name=ok", "epochs=1", "trainer.limit_train_batches=2", *QUIET])
        == 0
    )
    return runs / "ok"


def train(cli, runs, *args):
    result = cli("train", f"runs_dir={runs}", "epochs=1", *QUIET, *args)
    assert not runs.exists() or not any(runs.iterdir()), "a failed run left a folder behind"
    return result


def test_missing_dataset_path(cli, runs, tmp_path):
    assert_one_line_error(
        train(cli, runs, f"data=folder:{tmp_path}/nope"), "dataset folder not found", "nope"
    )


@pytest.mark.parametrize("name", ["../escape", "/tmp/anywhere", ".hidden", "a/b"])
def test_a_run_name_is_a_name_not_a_path(cli, runs, tmp_path, name):
    assert_one_line_error(train(cli, runs, f"name={name}"), "a run name is a folder name, not a path")
    assert not (runs.parent / "escape").exists()


def test_scoring_a_test_split_the_data_has_not(cli, runs, cifar_jpgs):
    result = train(cli, runs, f"data=folder:{cifar_jpgs / 'train'}", "test=true")
    assert_one_line_error(result, "test=true, but folder:", "has no test split to score")


def test_empty_folder(cli, runs, tmp_path):
    (tmp_path / "empty").mkdir()
    assert_one_line_error(train(cli, runs, f"data=folder:{tmp_path}/empty"), "no class folders with images")


def test_folder_with_one_class(cli, runs, tmp_path, cifar_jpgs):
    one = copy_classes(cifar_jpgs / "test", tmp_path / "one", per_class=6, classes=1)
    assert_one_line_error(train(cli, runs, f"data=folder:{one}"), "only one class folder")


def test_corrupt_image_is_named(cli, runs, tmp_path, cifar_jpgs):
    root = copy_classes(cifar_jpgs / "test", tmp_path / "photos", per_class=6)
    (root / "cat" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff garbage")
    assert_one_line_error(train(cli, runs, f"data=folder:{root}"), "cannot read image", "corrupt.jpg")


def test_unknown_model_and_dataset_suggest_close_names(cli, runs):
    assert_one_line_error(train(cli, runs, "model=resnt20"), "unknown model 'resnt20'", "resnet20")
    assert_one_line_error(train(cli, runs, "data=cifar-10"), "unknown dataset 'cifar-10'", "cifar10")


def test_unknown_config_key_and_wrong_type(cli, runs):
    assert_one_line_error(train(cli, runs, "batchsize=64"), "unknown config key 'batchsize'", "batch_size")
    assert_one_line_error(train(cli, runs, "optim.lr=fast"), "config key 'optim.lr'")
    assert_one_line_error(train(cli, runs, "optim.name=lion"), "config key 'optim.name'")


def test_missing_config_file(cli, runs, tmp_path):
    assert_one_line_error(cli("train", "--config", tmp_path / "no.yaml"), "config file not found")


def test_class_count_mismatch_with_a_checkpoint(cli, trained, tmp_path, cifar_jpgs):
    five = copy_classes(cifar_jpgs / "test", tmp_path / "five", per_class=6, classes=5)
    assert_one_line_error(cli("eval", trained, f"data=folder:{five}"), "predicts 10 classes", "has 5")


def test_resume_of_a_run_that_does_not_exist(cli, tmp_path):
    assert_one_line_error(cli("train", "--resume", tmp_path / "ghost"), "cannot resume", "ghost")


@pytest.mark.parametrize("content", ["garbage", "plain_dict", "pickled_object"])
def test_files_that_are_not_our_checkpoints(cli, tmp_path, content):
    path = tmp_path / "model.ckpt"
    if content == "garbage":
        path.write_bytes(b"\x00\x01 not a checkpoint")
    elif content == "plain_dict":
        torch.save({"state_dict": {}}, path)
    else:  # weights_only=True refuses to rebuild arbitrary objects, so nothing in the file runs
        path.write_bytes(pickle.dumps(shutil.copyfile))
    assert_one_line_error(cli("predict", path, tmp_path), "is not a vislab checkpoint")


def test_predict_to_an_unknown_format_and_on_a_missing_image(cli, trained, tmp_path):
    assert_one_line_error(cli("predict", trained, tmp_path, "--out", tmp_path / "p.txt"), "--out must end in")
    assert_one_line_error(cli("predict", trained, tmp_path / "none.png"), "no such image")
    assert_one_line_error(cli("eval", tmp_path), "no checkpoints in")


def test_unknown_command_line_flag(cli):
    assert_one_line_error(cli("train", "--epochs", "3"), "unrecognized arguments")
