import pytest

from vislab.cli import main

from conftest import QUIET


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    for name, model in (("mlp", "mlp"), ("cnn", "small_cnn")):
        assert main(["train", f"runs_dir={runs}", f"name={name}", f"model={model}", "epochs=2", *QUIET]) == 0
    return runs


def test_compare_tables_the_runs_and_their_config_differences(cli, runs):
    result = cli("compare", runs / "mlp", runs / "cnn")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0].startswith("| run | model | params | epochs | best top-1")
    assert lines[2].startswith("| mlp | mlp |") and lines[3].startswith("| cnn | small_cnn |")
    assert (runs / "compare" / "compare.html").is_file() and (runs / "compare" / "curves.png").is_file()
    assert "best top-5" in (runs / "compare" / "compare.md").read_text()
    # Only the model differs, which has its own column: channels-last, chosen per model (the MLP has no
    # convolutions), changes no result and is not listed as a difference.
    assert "The runs' configs are identical." in (runs / "compare" / "compare.md").read_text()


def test_runs_on_different_classes_cannot_be_compared(cli, runs, tmp_path, cifar_jpgs):
    args = [
        f"data=folder:{cifar_jpgs}",
        "name=cifar",
        f"runs_dir={tmp_path}",
        "epochs=1",
        "trainer.limit_train_batches=2",
    ]
    assert main(["train", *args, *QUIET]) == 0
    result = cli("compare", runs / "mlp", tmp_path / "cifar")
    assert result.code == 2 and "cannot compare" in result.err and "classes differ" in result.err


def test_a_folder_that_is_not_a_run_cannot_be_compared(cli, runs, tmp_path):
    result = cli("compare", runs / "mlp", tmp_path)
    assert result.code == 2 and "not a finished vislab run" in result.err
