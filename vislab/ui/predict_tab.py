"""Predict: uploaded images (or a folder on the server) through a run's model or an exported ONNX file:
top-k probability bars and Grad-CAM for classifiers, colour masks and overlays for segmentation, and the
rows as a CSV to download. Uploads are decoded with the same checks as training data."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import gradio as gr

from vislab.config import read_yaml
from vislab.data.images import image_files
from vislab.errors import VislabError, describe_os_error
from vislab.export import load_predictor
from vislab.tasks import get_task
from vislab.tasks.base import LEGEND
from vislab.ui.common import Context, failure
from vislab.ui.results_tab import finished_runs

MAX_IMAGES = 64


def model_choices(context: Context) -> list[str]:
    """Runs with a best checkpoint, and ONNX files exported into run folders."""
    exports = sorted(str(p.relative_to(context.runs_dir)) for p in context.runs_dir.glob("*/export/*.onnx"))
    return finished_runs(context) + exports


def chosen_model(context: Context, choice: str) -> Path:
    path = (context.runs_dir / (choice or "")).resolve()
    if not choice or context.runs_dir.resolve() not in path.parents or choice not in model_choices(context):
        raise VislabError("pick a run or an exported model from the list")
    return path


def task_of(context: Context, choice: str) -> str | None:
    """The task of a run, or of the run an exported model was written into, from its config.yaml (None
    where it cannot be told)."""
    try:
        path = chosen_model(context, choice)
        return read_yaml((path if path.is_dir() else path.parent.parent) / "config.yaml").get("task")
    except VislabError:
        return None


def images_to_predict(uploads: list[str] | None, folder: str) -> list[Path]:
    files = [Path(f) for f in uploads or []]
    if folder:
        target = Path(folder).expanduser()
        if not target.exists():
            raise VislabError(f"no such file or folder: {target}")
        files += image_files(target)
    if not files:
        raise VislabError("upload an image or give a folder")
    if len(files) > MAX_IMAGES:
        raise VislabError(
            f"{len(files)} images: the page predicts at most {MAX_IMAGES} at once "
            "(vislab predict takes any number)"
        )
    return files


def show_each(task, predictor, files: list[Path], topk: int) -> tuple[list, list[str]]:
    """What the page shows for each image it can read, and one line for each it cannot (named by its
    file name, not the upload's temporary path): one bad file does not hold back the others."""
    try:
        return task.show(predictor, files, topk), []  # one call: a segmentation legend comes once
    except VislabError:
        pass  # a bad file among them: each image on its own
    shown, refused = [], []
    for file in files:
        try:
            shown += task.show(predictor, [file], topk)
        except VislabError as error:
            refused.append(str(error).replace(str(file), file.name))
    for item in shown[1:]:  # the legend once, after the first image
        item.pictures[:] = [picture for picture in item.pictures if picture[1] != LEGEND]
    return shown, refused


def write_csv(rows: list[dict], out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with open(out, "w", newline="") as file:
        writer = csv.DictWriter(file, columns)
        writer.writeheader()
        writer.writerows(rows)
    return out


def build(context: Context) -> None:
    with gr.Row():
        with gr.Column():
            model = gr.Dropdown(
                model_choices(context), label="run or exported ONNX model", elem_id="predict-model"
            )
            refresh = gr.Button("Refresh the list")
            uploads = gr.File(
                file_count="multiple", file_types=["image"], label="images", elem_id="predict-files"
            )
            folder = gr.Textbox(label="or a folder of images on this machine", elem_id="predict-folder")
            topk = gr.Slider(1, 10, value=5, step=1, label="top-k", elem_id="predict-topk")
            go = gr.Button("Predict", variant="primary", elem_id="predict")
        with gr.Column():
            message = gr.Markdown(elem_id="predict-message")
            top = gr.Label(label="top-k classes (first image; click a picture for its own)", elem_id="topk")
            pictures = gr.Gallery(
                label="images, Grad-CAM, masks",
                columns=4,
                height=360,
                elem_id="predict-pictures",
                object_fit="contain",
            )
            table = gr.Dataframe(
                headers=["file", "class1", "prob1"],
                label="predictions",
                interactive=False,
                elem_id="predict-table",
            )
            download = gr.File(label="predictions as CSV", elem_id="predict-csv")
    tops = gr.State([])  # per picture: the top-k of the image it shows

    def cleared(text: str) -> tuple:
        """The message, and every result of an earlier prediction emptied: nothing stale under it."""
        return text, gr.update(value=None, visible=False), [], {"headers": ["file"], "data": []}, None, []

    def predict(choice, files, folder_path, k):
        try:
            return predicted(choice, files, folder_path, k)
        except VislabError as error:
            return cleared(failure(str(error)))
        except OSError as error:
            return cleared(failure(describe_os_error(error)))

    def predicted(choice, files, folder_path, k):
        started = time.perf_counter()
        predictor = load_predictor(chosen_model(context, choice))
        task = get_task(predictor.meta.task)
        shown, refused = show_each(task, predictor, images_to_predict(files, folder_path), int(k))
        unread = "".join(f"\n- {line}" for line in refused)
        if not shown:
            return cleared(failure(f"no image could be read:{unread}"))
        gallery = [picture for item in shown for picture in item.pictures]
        per_picture = [item.top for item in shown for _ in item.pictures]
        rows = [item.row for item in shown]
        stamp = time.strftime("%Y%m%d-%H%M%S")
        csv_path = write_csv(rows, context.runs_dir / ".ui" / "predictions" / f"predictions-{stamp}.csv")
        table_value = {"headers": list(rows[0]), "data": [list(r.values()) for r in rows]}
        took = time.perf_counter() - started
        said = f"{len(shown)} images through {predictor.path.name} in {took * 1000:.0f} ms"
        return (
            said + (f"; {len(refused)} could not be read:{unread}" if refused else ""),
            gr.update(value=shown[0].top, visible=shown[0].top is not None),  # no classes for masks
            gallery,
            table_value,
            str(csv_path),
            per_picture,
        )

    def pick(per_picture, event: gr.SelectData):
        chosen = per_picture[event.index] if event.index < len(per_picture) else None
        return chosen if chosen is not None else gr.update()

    go.click(predict, [model, uploads, folder, topk], [message, top, pictures, table, download, tops])
    pictures.select(pick, tops, top)
    # A segmentation model has no top-k classes: its slider is hidden.
    model.change(lambda choice: gr.update(visible=task_of(context, choice) != "segmentation"), model, topk)
    refresh.click(lambda: gr.update(choices=model_choices(context)), None, model)
