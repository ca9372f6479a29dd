"""The `vislab` command: train, eval, predict, models, datasets. User mistakes exit 2 with one line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vislab.config import INFERENCE_PRECISIONS
from vislab.errors import RunStopped, Stopped, VislabError, describe_os_error
from vislab.plugins import import_all, lock_if_inherited
from vislab.stopping import STOP


class Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise VislabError(f"{message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="vislab", description="Train, evaluate and use image classifiers and segmentation models."
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    train = commands.add_parser("train", help="train a model (default: small_cnn on the embedded digits)")
    train.add_argument(
        "overrides", nargs="*", help="config overrides as key=value, e.g. model=resnet20 optim.lr=0.1"
    )
    train.add_argument("--config", help="a YAML file or a recipe name (see 'vislab recipes') to start from")
    train.add_argument("--resume", metavar="RUN", help="continue runs/<name> from its last checkpoint")
    train.add_argument("--print-config", action="store_true", help="print the resolved config and exit")

    sweep = commands.add_parser(
        "sweep", help="many runs from one command: a grid or an Optuna search over any config keys"
    )
    sweep.add_argument(
        "overrides",
        nargs="*",
        help="key=value for every trial, or key=SPACE to search: grid(a,b,...), choice(a,b,...), "
        "uniform(lo,hi), loguniform(lo,hi), int(lo,hi)",
    )
    sweep.add_argument("--config", help="a YAML file or a recipe name every trial starts from")
    sweep.add_argument("--trials", type=int, help="trials in all (default: every grid point)")
    sweep.add_argument("--jobs", type=int, default=1, help="trials at once, each in its own process")
    sweep.add_argument("--study", help="the study's name and folder under runs/ (default: from the command)")
    sweep.add_argument(
        "--storage", help="a database URL that workers on several machines share (postgresql://...)"
    )
    sweep.add_argument("--prune", default="none", help="stop poor trials early: none, median or hyperband")
    sweep.add_argument("--metric", help="the validation metric to optimise (default: the task's)")
    sweep.add_argument("--direction", choices=["max", "min"], help="(default: what suits the metric)")

    evaluate = commands.add_parser("eval", help="evaluate a run or checkpoint on a split")
    evaluate.add_argument("run", metavar="RUN_OR_CKPT")
    evaluate.add_argument("--split", choices=["train", "val", "test"], default="val")
    evaluate.add_argument(
        "--tta", action="store_true", help="also score with test-time augmentation (flips, shifts): the gain"
    )
    evaluate.add_argument("overrides", nargs="*", help="e.g. data=folder:PATH to evaluate on other data")

    predict = commands.add_parser(
        "predict", help="classify or segment images with a run, a checkpoint or an ONNX export"
    )
    predict.add_argument("run", metavar="RUN_CKPT_OR_ONNX")
    predict.add_argument("target", metavar="IMAGE_OR_DIR")
    predict.add_argument("--topk", type=int, default=5)
    predict.add_argument("--tta", action="store_true", help="average over flipped (and shifted) views")
    predict.add_argument(
        "--precision",
        choices=INFERENCE_PRECISIONS,
        help="run the model in this precision (default: the one it trained in; ONNX files: 32-true)",
    )
    predict.add_argument(
        "--out", type=Path, help="a .csv or .json file (segmentation: a folder for the masks)"
    )

    report = commands.add_parser("report", help="write a run's HTML report with curves, confusion, ROC, CAM")
    report.add_argument("run", metavar="RUN")
    report.add_argument("--split", choices=["train", "val", "test"], default="val")
    report.add_argument("--no-tsne", action="store_true", help="skip the t-SNE plot (slow on large splits)")
    report.add_argument("--no-cam", action="store_true", help="skip the Grad-CAM grids")

    compare = commands.add_parser("compare", help="compare finished runs: a table and overlaid curves")
    compare.add_argument("runs", metavar="RUN", nargs="+")
    compare.add_argument(
        "--out", type=Path, help="output folder (default: runs/compare beside the first run)"
    )

    export = commands.add_parser(
        "export", help="export a run's model to ONNX, TorchScript or safetensors, checked on real images"
    )
    export.add_argument("run", metavar="RUN_OR_CKPT")
    export.add_argument(
        "--format", default="onnx", help="onnx, torchscript, or safetensors (weights that cannot carry code)"
    )
    export.add_argument("--out", type=Path, help="output file (default: RUN/export/model.onnx)")

    check = commands.add_parser(
        "check", help="audit a dataset: bad files, duplicates and leaks, class balance, label issues"
    )
    check.add_argument("data", metavar="DATA", help="any data= value: digits, cifar10, folder:PATH, ...")
    check.add_argument("overrides", nargs="*", help="e.g. data_dir=PATH val_fraction=0.2")
    check.add_argument("--out", type=Path, help="output folder (default: runs/check/<data>)")
    check.add_argument("--no-labels", action="store_true", help="skip the label-issue search (the slow part)")
    check.add_argument("--fix", action="store_true", help="write and print the fixes it suggests (fixes.csv)")
    check.add_argument(
        "--apply", action="store_true", help="carry the fixes out (moves files; implies --fix)"
    )

    augment = commands.add_parser(
        "augment", help="write N augmented copies of each training image to a new image folder"
    )
    augment.add_argument("data", metavar="DATA", help="any classification data= value")
    augment.add_argument("out", metavar="OUT", type=Path, help="the folder to write (train/, val/, test/)")
    augment.add_argument("--copies", type=int, default=1, help="augmented copies per training image")
    augment.add_argument("overrides", nargs="*", help="augment.* keys, image_size, seed, ...")

    ui = commands.add_parser("ui", help="the web app: data, training, results and prediction in a browser")
    ui.add_argument("--runs", type=Path, default=Path("runs"), help="the runs folder (default: runs)")
    ui.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only)")
    ui.add_argument("--port", type=int, default=7860)

    commands.add_parser("recipes", help="list the recipes that reproduce the seed experiments")
    commands.add_parser("models", help="list the registered models")
    datasets = commands.add_parser("datasets", help="list the datasets and whether each is on disk")
    datasets.add_argument("overrides", nargs="*", help="data_dir=PATH to look somewhere else")
    for name in ("train", "sweep", "eval", "predict", "report", "export", "models", "ui"):
        commands.choices[name].add_argument(
            "--import",
            dest="imports",
            action="append",
            default=[],
            metavar="FILE.py|MODULE",
            help="import your own model code first (repeatable): a run trained with model=FILE.py:NAME "
            "needs it named again, since vislab never imports code named in a checkpoint",
        )
    return parser


def run_train(args) -> None:
    from vislab import api
    from vislab.distributed import is_rank_zero

    if args.print_config:
        from vislab.config import to_yaml
        from vislab.data import with_augment_defaults

        config = api.train_config(args.config, overrides=args.overrides, resume=args.resume)
        # Normalisation and image size stay null here: they come from the data when the run starts.
        print(to_yaml(with_augment_defaults(config)), end="")
        return
    run = api.train(args.config, overrides=args.overrides, resume=args.resume)
    if run.finished:
        summary, metric = run.summary, run.config.early_stopping.monitor
        print(
            f"{run.path}: best {metric} {summary[f'best_{metric}']:.4f} (epoch {summary['best_epoch']}), "
            f"final {summary[f'final_{metric}']:.4f}, {summary['wall_time_s']:.0f}s"
        )
        if run.config.scores_test and is_rank_zero():  # as `vislab eval RUN --split test`; rank 0 scored it
            print_eval(api.Metrics(json.loads((run.path / "eval_test.json").read_text())))


def run_sweep(args) -> None:
    from vislab.sweeps import sweep
    from vislab.sweeps.table import best_line

    result = sweep(
        args.config,
        overrides=args.overrides,
        trials=args.trials,
        jobs=args.jobs,
        study=args.study,
        storage=args.storage,
        prune=args.prune,
        metric=args.metric,
        direction=args.direction,
        imports=args.imports,
    )
    info = result.info
    print(f"{result.path}: {info['done']} of {info['trials']} trials done; {best_line(info)}")
    if info["best"]:
        print(f"best run: {info['best']['run']}")
    print(f"wrote {result.path / 'sweep.csv'} and {result.path / 'sweep.html'}")


def run_eval(args) -> None:
    from vislab import api

    metrics = api.load(args.run).evaluate(
        split=args.split, tta=args.tta, write=True, overrides=args.overrides
    )
    print_eval(metrics)


def print_eval(metrics) -> None:
    """An evaluation's line, and test-time augmentation's gain where it was scored with it."""
    from vislab.tasks import describe_tta

    print(metrics)
    if "tta" in metrics:
        print(describe_tta(metrics))


def run_predict(args) -> None:
    from vislab import api
    from vislab.predictions import check_output
    from vislab.runs import run_dir_of

    model = api.load(args.run)
    check_output(model.task, args.out)
    predictions = model.predict(args.target, topk=args.topk, tta=args.tta, precision=args.precision)
    if model.task == "segmentation":
        folder = predictions.save(args.out or run_dir_of(model.path) / "predictions")
        print(f"wrote label, colour and overlay masks to {folder}")
        return
    if args.out is not None:
        predictions.save(args.out)
    print("\n".join(predictions.lines()))


def run_report(args) -> None:
    from vislab.reports.document import ReportOptions
    from vislab.tasks import report

    print(report(args.run, ReportOptions(split=args.split, tsne=not args.no_tsne, cam=not args.no_cam)))


def run_compare(args) -> None:
    from vislab.tasks import compare

    out, table = compare(args.runs, args.out)
    print(table.markdown())
    print(f"wrote {out / 'compare.html'} and {out / 'compare.md'}")


def run_export(args) -> None:
    from vislab.tasks import export

    path, difference = export(args.run, args.format, args.out)
    print(f"wrote {path}; max |logit difference| from PyTorch on real images: {difference:.2e}")


def run_check(args) -> None:
    from vislab.check import check_dataset, summary_lines
    from vislab.check.fix import apply_plan, plan_fixes, write_plan
    from vislab.tasks import load_config

    config = load_config(None, [f"data={args.data}", *args.overrides])
    stem = Path(config.data.split(":", 1)[-1]).name or config.data
    out = args.out or Path(config.runs_dir) / "check" / stem
    findings = check_dataset(config, out, with_labels=not args.no_labels)
    print("\n".join(summary_lines(findings)))
    print(f"wrote {out / 'check.html'} and {out / 'check.json'}")
    if args.fix or args.apply:
        plan = plan_fixes(findings)
        for step in plan:
            print(
                f"{step['action']} {step['file']} {step['target']}  ({step['reason']})".replace(
                    "  (", " (", 0
                )
            )
        print(f"{len(plan)} fixes written to {write_plan(plan, out / 'fixes.csv')}")
        if args.apply:
            moved = apply_plan(plan, out / "removed")
            print(f"applied: moved {moved} files (removed ones into {out / 'removed'})")
        elif plan:
            print("nothing was changed; add --apply to carry these out")


def run_augment(args) -> None:
    from vislab.data.offline import augment_dataset
    from vislab.tasks import load_config

    config = load_config(None, [f"data={args.data}", *args.overrides])
    if config.task != "classification":
        raise VislabError(f"vislab augment writes class folders; {args.data} is {config.task} data")
    written = augment_dataset(config, args.out, args.copies)
    print(
        f"wrote {args.out}: train {written.originals} images + {written.copies} augmented copies, "
        f"val/test {written.untouched} images untouched"
    )
    print(f"train on it with: vislab train data=folder:{args.out}")


def run_ui(args) -> None:
    from vislab.ui.app import serve

    serve(args.runs, args.host, args.port)


def run_recipes(args) -> None:
    from vislab.recipes import list_recipes

    for recipe in list_recipes():
        print(f"{recipe.name:<36} {recipe.description}\n{'':<36} expect: {recipe.expect}")
    print("run one with: vislab train --config NAME [key=value ...]")


def run_models(args) -> None:
    from vislab.models import count_parameters, create_model, registered_models

    print(f"{'model':<20} {'params (10 classes)':>20} {'input':>6}  {'task':<15} family")
    for name, entry in registered_models().items():
        params = count_parameters(create_model(name, 10, 3, entry.input_size))
        print(f"{name:<20} {params:>20,} {entry.input_size:>6}  {entry.task:<15} {entry.family}")
    print("timm:<name>        any timm model, e.g. timm:resnet18 (see timm.list_models())")


def run_datasets(args) -> None:
    from vislab.config import build_config, parse_overrides
    from vislab.data import data_dir_of, registered_datasets
    from vislab.data.registry import shown_name

    data_dir = data_dir_of(build_config(parse_overrides(args.overrides)))
    print(f"{'dataset':<16} {'task':<15} {'on disk':<15} description")
    for name, entry in registered_datasets().items():
        shown = shown_name(name)
        present = "-" if shown != name else ("present" if entry.is_present(data_dir) else "not downloaded")
        print(f"{shown:<16} {entry.task:<15} {present:<15} {entry.description}")
    print(f"data_dir: {data_dir}")


COMMANDS = {
    "train": run_train,
    "sweep": run_sweep,
    "report": run_report,
    "compare": run_compare,
    "export": run_export,
    "recipes": run_recipes,
    "ui": run_ui,
    "check": run_check,
    "augment": run_augment,
    "eval": run_eval,
    "predict": run_predict,
    "models": run_models,
    "datasets": run_datasets,
}


def parse_arguments(parser: argparse.ArgumentParser, argv: list[str] | None):
    """argparse's reading, except that `key=value` overrides may also follow options
    (`vislab augment DATA OUT --copies 2 augment.rotation=15`), which argparse alone refuses."""
    args, unknown = parser.parse_known_args(argv)
    overrides = [word for word in unknown if "=" in word and not word.startswith("-")]
    if hasattr(args, "overrides") and overrides:
        args.overrides += overrides
        unknown = [word for word in unknown if word not in overrides]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Runs one command; stop signals are handled for its whole life (vislab.stopping)."""
    with STOP.installed():
        return run_command(argv)


def run_command(argv: list[str] | None) -> int:
    command = "vislab"
    try:
        args = parse_arguments(build_parser(), argv)
        command = f"vislab {args.command}"
        import_all(getattr(args, "imports", None))  # --import: the user's own model code, first
        lock_if_inherited()  # a job of the web UI's: it imports nothing more than the server named
        COMMANDS[args.command](args)
    except Stopped as stop:  # outside training: nothing it was writing is left half-written
        print(f"vislab: stopped by {stop.name}; {command} wrote nothing it had not finished", file=sys.stderr)
        return stop.exit_code
    except VislabError as error:
        print(f"vislab: error: {error}", file=sys.stderr)
        return 2
    except RunStopped as stop:
        print(f"vislab: {stop}", file=sys.stderr)
        return stop.exit_code
    except OSError as error:  # the machine's, not the input's: a full disk, a refused write
        print(f"vislab: error: {describe_os_error(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # only where no handler could be installed (not the main thread)
        print("vislab: interrupted", file=sys.stderr)
        return 130
    return 0
