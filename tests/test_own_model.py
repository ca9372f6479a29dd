"""Your own model: a file (`model=nets.py:TinyNet`) or module reference (`model=pkg.nets:TinyNet`), a name
registered with `vislab.models.register_model`, or a plugin package's `vislab.models` entry point. It
trains, resumes bit for bit, reports, evaluates, predicts and exports to ONNX; the code named in a run is
never imported by itself (`--import` names it again); bad references are one line and exit code 2."""

from __future__ import annotations

import shutil
import signal
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from vislab import plugins
from vislab.errors import VislabError
from vislab.models import _registry, create_model, register_model, resolve_model

from conftest import QUIET, small_copy
from stopper import send_at

FAST = ["data=digits", "batch_size=128", "epochs=1", "optim.lr=0.05", *QUIET]  # 12 whole batches an epoch

NETS = '''
from torch import nn


class TinyNet(nn.Module):
    """Two conv blocks, global pooling, a linear head: a student's CNN."""

    def __init__(self, num_classes, in_chans, width=16):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, num_classes))

    def forward(self, x):
        return self.head(self.features(x))


def flat(num_classes, in_chans, image_size, hidden=64):
    """No spatial layer at all: an MLP on the flattened image."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_chans * image_size * image_size, hidden),
        nn.ReLU(),
        nn.Linear(hidden, num_classes),
    )


def seven_outputs(num_classes, in_chans):
    return nn.Sequential(nn.Flatten(), nn.LazyLinear(7))


def per_pixel(num_classes, in_chans):
    return nn.Conv2d(in_chans, num_classes, 1)


def not_a_model(num_classes, in_chans):
    return "a string"


def fails_to_build(num_classes, in_chans):
    return nn.Linear(in_chans, num_classes, bias=True, colour="red")
'''
BUILD_LINE = (
    NETS.splitlines().index('    return nn.Linear(in_chans, num_classes, bias=True, colour="red")') + 1
)


@pytest.fixture(autouse=True)
def fresh_process_state():
    """Each test starts as a new process would: vislab's models only, nothing of the user's imported."""
    models = dict(_registry._MODELS)
    yield
    forget_own_code(models)


def forget_own_code(models: dict | None = None) -> None:
    """What a later command in a new process knows: no file or module imported, no reference resolved."""
    builtin = {name: entry for name, entry in _registry._MODELS.items() if entry.builtin}
    _registry._MODELS.clear()
    _registry._MODELS.update(models if models is not None else builtin)
    plugins.reset()


@pytest.fixture
def nets(tmp_path) -> Path:
    path = tmp_path / "nets.py"
    path.write_text(NETS)
    return path


def state_dict(run: Path, name: str = "last") -> dict:
    return torch.load(run / "checkpoints" / f"{name}.ckpt", weights_only=True)["state_dict"]


def digit_images(folder: Path, count: int) -> Path:
    """The first real scikit-learn digits as 8x8 grayscale PNGs."""
    from PIL import Image
    from sklearn.datasets import load_digits

    folder.mkdir()
    for i, pixels in enumerate(load_digits().images[:count]):
        Image.fromarray((pixels * 255 / 16).astype("uint8")).save(folder / f"digit{i}.png")
    return folder


def refusal(run: Path, nets: Path, model: str = "TinyNet") -> str:
    return (
        f"vislab: error: {run} was trained with model={nets}:{model}, which vislab does not import by "
        f"itself: pass --import {nets}\n"
    )


def test_a_cnn_from_a_file_trains_evaluates_reports_predicts_and_exports(cli, tmp_path, nets):
    run = tmp_path / "tiny"
    trained = cli("train", *FAST, f"model={nets}:TinyNet", f"runs_dir={tmp_path}", "name=tiny")
    assert trained.code == 0, trained.err
    assert (run / "config.yaml").read_text().count(f"model: {nets}:TinyNet") == 1
    forget_own_code()  # a later command, in a process of its own

    for command in (
        ["eval", run],
        ["predict", run, run / "report"],
        ["report", run, "--no-tsne"],
        ["export", run],
        ["train", "--resume", run],
    ):
        refused = cli(*command)
        assert (refused.code, refused.err) == (2, refusal(run, nets)), command
    assert not (run / "eval_val.json").exists() and not (run / "report").exists()

    evaluated = cli("eval", run, "--import", nets)
    assert evaluated.code == 0, evaluated.err
    assert "top-1" in evaluated.out and (run / "eval_val.json").is_file()
    reported = cli("report", run, "--no-tsne", "--import", nets)
    assert reported.code == 0, reported.err
    assert "## Grad-CAM" in (run / "report" / "report.md").read_text()
    assert (run / "report" / "gradcam_correct.png").is_file()
    images = digit_images(tmp_path / "images", count=6)
    from_checkpoint = cli("predict", run, images, "--topk", "1", "--import", nets)
    assert from_checkpoint.code == 0, from_checkpoint.err
    exported = cli("export", run, "--import", nets)
    assert exported.code == 0, exported.err

    forget_own_code()  # the ONNX file carries the network: no code needed
    from_onnx = cli("predict", run / "export" / "model.onnx", images, "--topk", "1")
    assert from_onnx.code == 0, from_onnx.err
    labels = [[line.split()[0], line.split()[1]] for line in from_onnx.out.splitlines()]
    assert labels == [[line.split()[0], line.split()[1]] for line in from_checkpoint.out.splitlines()]


def test_a_file_model_resumes_bit_for_bit_once_its_code_is_named_again(cli, tmp_path, nets, monkeypatch):
    model, runs = f"model={nets}:TinyNet", f"runs_dir={tmp_path}"
    assert cli("train", *FAST, model, runs, "name=whole", "checkpoint_every_min=0").code == 0
    send_at(monkeypatch, "vislab.resilience.RunGuard.on_train_batch_end", signal.SIGTERM, nth=5)
    stopped = cli("train", *FAST, model, runs, "name=stopped", "checkpoint_every_min=0")
    assert stopped.code == 143 and "stopped by SIGTERM" in stopped.err, stopped.err
    monkeypatch.undo()
    forget_own_code()

    refused = cli("train", "--resume", tmp_path / "stopped")
    assert (refused.code, refused.err) == (2, refusal(tmp_path / "stopped", nets))
    resumed = cli("train", "--resume", tmp_path / "stopped", "--import", nets)
    assert resumed.code == 0, resumed.err
    whole, stopped = state_dict(tmp_path / "whole"), state_dict(tmp_path / "stopped")
    assert whole.keys() == stopped.keys()
    assert all(torch.equal(whole[k], stopped[k]) for k in whole)
    assert (tmp_path / "whole" / "metrics.csv").read_text().splitlines()[1].split(",")[:5] == (
        tmp_path / "stopped" / "metrics.csv"
    ).read_text().splitlines()[1].split(",")[:5]


def test_the_import_may_name_the_file_elsewhere(cli, tmp_path, nets):
    """A run trained elsewhere names the file as it was given there: a file of that name, imported, serves."""
    assert cli("train", *FAST, f"model={nets}:TinyNet", f"runs_dir={tmp_path}", "name=tiny").code == 0
    forget_own_code()
    moved = tmp_path / "elsewhere" / "nets.py"
    moved.parent.mkdir()
    shutil.move(nets, moved)
    evaluated = cli("eval", tmp_path / "tiny", "--import", moved)
    assert evaluated.code == 0, evaluated.err


def test_a_module_reference_trains_and_needs_the_module_named_again(cli, tmp_path, monkeypatch):
    package = tmp_path / "code" / "student_models"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text(NETS)
    monkeypatch.syspath_prepend(str(tmp_path / "code"))
    trained = cli("train", *FAST, "model=student_models.nets:TinyNet", f"runs_dir={tmp_path}", "name=m")
    assert trained.code == 0, trained.err
    forget_own_code()
    refused = cli("eval", tmp_path / "m")
    assert refused.code == 2
    assert refused.err == (
        f"vislab: error: {tmp_path / 'm'} was trained with model=student_models.nets:TinyNet, which vislab "
        "does not import by itself: pass --import student_models.nets\n"
    )
    assert cli("eval", tmp_path / "m", "--import", "student_models.nets").code == 0


def test_a_model_without_spatial_layers_reports_that_there_is_no_class_activation_map(cli, tmp_path, nets):
    trained = cli(
        "train", *FAST, f"model={nets}:flat", "model_args={hidden: 32}", f"runs_dir={tmp_path}", "name=f"
    )
    assert trained.code == 0, trained.err
    reported = cli("report", tmp_path / "f", "--no-tsne", "--import", nets)
    assert reported.code == 0, reported.err
    assert "has no spatial feature maps" in (tmp_path / "f" / "report" / "report.md").read_text()


BAD = {
    "no such file": ("{tmp}/missing.py:f", "no such file: {tmp}/missing.py"),
    "no such name": (
        "{nets}:Missing",
        "{nets} has no 'Missing'; its models could be: TinyNet, flat, seven_outputs, per_pixel, not_a_model, "
        "fails_to_build",
    ),
    "not a module": ("{nets}:not_a_model", "model={nets}:not_a_model returned a str, not a torch nn.Module"),
    "output does not fit the classes": (
        "{nets}:seven_outputs",
        "model={nets}:seven_outputs gives output (2, 7) for a batch of shape (2, 1, 8, 8) where (2, 10) was "
        "expected (10 classes)",
    ),
    "a 4-D output on classification data": (
        "{nets}:per_pixel",
        "digits is classification data but {nets}:per_pixel is a segmentation model: pick a classification "
        "model (see 'vislab models') or segmentation data (see 'vislab datasets')",
    ),
    "the model's code fails": (
        "{nets}:fails_to_build",
        "model={nets}:fails_to_build failed to build: nets.py, line {line}: TypeError: "
        "Linear.__init__() got an unexpected keyword argument 'colour'",
    ),
    "syntax error": ("{tmp}/broken.py:f", "{tmp}/broken.py, line 3: syntax error: '(' was never closed"),
    "an error while importing": (
        "{tmp}/fails.py:f",
        "importing {tmp}/fails.py failed: fails.py, line 2: NameError: name 'undefined' is not defined",
    ),
    "no such module": (
        "no_such_package.nets:f",
        "no module named no_such_package.nets (is its folder on PYTHONPATH?)",
    ),
}


@pytest.mark.parametrize("model, message", BAD.values(), ids=BAD.keys())
def test_a_bad_model_reference_is_one_line_and_leaves_no_run_folder(cli, tmp_path, nets, model, message):
    (tmp_path / "broken.py").write_text("import torch\n\ndef f(num_classes:\n    pass\n")
    (tmp_path / "fails.py").write_text("import torch\nx = undefined\n")
    model, message = (text.format(tmp=tmp_path, nets=nets, line=BUILD_LINE) for text in (model, message))
    runs = tmp_path / "runs"
    result = cli("train", *FAST, f"model={model}", f"runs_dir={runs}")
    assert (result.code, result.err) == (2, f"vislab: error: {message}\n")
    assert not runs.exists() or not any(runs.iterdir())
    forget_own_code()
    from vislab.api import train

    with pytest.raises(VislabError) as raised:  # the same line from Python
        train(model=model, runs_dir=str(runs), overrides=FAST)
    assert str(raised.value) == message
    assert not runs.exists() or not any(runs.iterdir())


def test_a_model_registered_with_the_public_decorator_is_usable_by_name(cli, tmp_path):
    registering = tmp_path / "registering.py"
    registering.write_text(
        NETS
        + textwrap.dedent("""
        from vislab.models import register_model

        @register_model("tiny_registered", input_size=8)
        def tiny(num_classes, in_chans, width=8):
            return TinyNet(num_classes, in_chans, width)
        """)
    )
    listed = cli("models", "--import", registering)
    assert listed.code == 0 and "tiny_registered" in listed.out
    trained = cli(
        "train",
        *FAST,
        "model=tiny_registered",
        "model_args={width: 4}",
        "--import",
        registering,
        f"runs_dir={tmp_path}",
        "name=r",
    )
    assert trained.code == 0, trained.err
    forget_own_code()
    refused = cli("eval", tmp_path / "r")
    assert (
        refused.code == 2
        and "was trained with model=tiny_registered, which is not registered here" in refused.err
    )
    assert cli("eval", tmp_path / "r", "--import", registering).code == 0


def test_register_model_bare_and_with_arguments():
    @register_model
    class Bare(nn.Module):
        def __init__(self, num_classes, in_chans):
            super().__init__()
            self.linear = nn.Linear(in_chans, num_classes)

        def forward(self, x):
            return self.linear(x.mean((2, 3)))

    @register_model("seg_by_name", task="segmentation", input_size=64)
    def seg(num_classes, in_chans, image_size):
        return nn.Conv2d(in_chans, num_classes, 1)

    assert create_model("Bare", 4, 3, 16)(torch.zeros(1, 3, 16, 16)).shape == (1, 4)
    entry = _registry.get_entry("seg_by_name")
    assert (entry.task, entry.input_size, entry.options()) == ("segmentation", 64, [])
    assert create_model("seg_by_name", 5, 3, 32)(torch.zeros(1, 3, 32, 32)).shape == (1, 5, 32, 32)
    with pytest.raises(VislabError, match="small_cnn is one of vislab's models"):
        register_model("small_cnn")(seg)


def test_python_objects_resolve_to_names_that_train(tmp_path):
    """From Python: a class, a function or an nn.Module instance (each build a copy of it)."""

    class Net(nn.Module):
        def __init__(self, num_classes, in_chans):
            super().__init__()
            self.conv, self.head = nn.Conv2d(in_chans, 8, 3, padding=1), nn.Linear(8, num_classes)

        def forward(self, x):
            return self.head(self.conv(x).mean((2, 3)))

    instance = Net(10, 1)
    name = resolve_model(instance)
    built = create_model(name, 10, 1, 8)
    assert built is not instance and torch.equal(built.conv.weight, instance.conv.weight)
    assert resolve_model(Net) == "Net"  # a class of no importable module: by its name
    from vislab.api import train

    run = train(
        model=Net,
        data="digits",
        epochs=1,
        runs_dir=str(tmp_path),
        trainer={"progress_bar": False},
        report=False,
        batch_size=128,
    )
    assert (Path(run.path) / "checkpoints" / "best.ckpt").is_file()


def test_a_plugin_package_registers_through_the_entry_point_group(cli, tmp_path, monkeypatch):
    """An installed distribution declaring `[project.entry-points."vislab.models"]` (a fake one on the
    path): its models are listed and usable by name, and its modules' references need no --import."""
    site = tmp_path / "site"
    (site / "plugin_nets").mkdir(parents=True)
    (site / "plugin_nets" / "__init__.py").write_text(NETS)
    info = site / "plugin_nets-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: plugin-nets\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[vislab.models]\nplugin_tiny = plugin_nets:TinyNet\n")
    monkeypatch.syspath_prepend(str(site))
    listed = cli("models")
    assert listed.code == 0 and "plugin_tiny" in listed.out
    trained = cli("train", *FAST, "model=plugin_tiny", f"runs_dir={tmp_path}", "name=p")
    assert trained.code == 0, trained.err
    by_module = cli("train", *FAST, "model=plugin_nets:flat", f"runs_dir={tmp_path}", "name=q")
    assert by_module.code == 0, by_module.err
    forget_own_code()  # a new process: the installed plugin loads again, no --import needed
    assert cli("eval", tmp_path / "p").code == 0
    assert cli("eval", tmp_path / "q").code == 0


def test_from_python_a_run_of_a_file_model_loads_once_the_file_is_named_again(cli, tmp_path, nets):
    import vislab

    assert cli("train", *FAST, f"model={nets}:TinyNet", f"runs_dir={tmp_path}", "name=tiny").code == 0
    forget_own_code()
    with pytest.raises(VislabError) as refused:
        vislab.load(tmp_path / "tiny").predict(digit_images(tmp_path / "images", count=2))
    assert f"{refusal(tmp_path / 'tiny', nets)}" == f"vislab: error: {refused.value}\n"
    resolve_model(f"{nets}:TinyNet")  # the Python for --import
    predictions = vislab.load(tmp_path / "tiny").predict(tmp_path / "images")
    assert len(predictions.to_pandas()) == 2


def test_an_unregistered_model_with_a_4d_output_segments(cli, tmp_path, nets, camvid):
    """Its task follows from its output: per-pixel logits make it a segmentation model, on real CamVid."""
    scenes = small_copy(camvid, tmp_path / "camvid", train=4, val=2)
    args = [f"data=segfolder:{scenes}", "segmentation.ignore_index=11", "image_size=48", "epochs=1", *QUIET]
    trained = cli("train", *args, f"model={nets}:per_pixel", f"runs_dir={tmp_path}", "name=s")
    assert trained.code == 0, trained.err
    forget_own_code()
    evaluated = cli("eval", tmp_path / "s", "--import", nets)
    assert evaluated.code == 0 and "mIoU" in evaluated.out, evaluated.err
    assert cli("export", tmp_path / "s", "--import", nets).code == 0


def test_processes_started_from_the_web_ui_get_the_code_it_imported(nets, tmp_path, monkeypatch):
    """The UI's training jobs (vislab train, --resume included) are processes of their own."""
    package = tmp_path / "code" / "student_models"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(NETS)
    monkeypatch.syspath_prepend(str(tmp_path / "code"))
    assert plugins.import_arguments() == []
    plugins.import_all([str(nets), "student_models"])
    assert plugins.import_arguments() == ["--import", str(nets), "--import", "student_models"]


def test_a_locked_server_resolves_only_the_code_it_was_started_with(cli, tmp_path, nets):
    """`vislab ui` locks imports once it starts: a reference typed on its page to a file it was not started
    with (an uploaded zip may hold one) is refused and never runs; what `--import` named still resolves."""
    marker = tmp_path / "payload-ran"
    uploaded = tmp_path / "uploads" / "evil.py"
    uploaded.parent.mkdir()
    uploaded.write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n")
    plugins.import_all([str(nets)])  # vislab ui --import nets.py
    plugins.lock("this page imports no code of its own accord")
    assert resolve_model(f"{nets}:TinyNet") == f"{nets}:TinyNet"
    for reference in (f"{uploaded}:net", "json.decoder:JSONDecoder"):
        with pytest.raises(VislabError, match="this page imports no code of its own accord"):
            resolve_model(reference)
    assert not marker.exists()
    # The jobs it starts inherit the lock, after importing what the server passes them with --import.
    job = cli("train", *FAST, f"model={uploaded}:net", "--import", str(nets), f"runs_dir={tmp_path}")
    assert job.code == 2 and "this page imports no code of its own accord" in job.err, job.err
    assert not marker.exists()
