"""Data & model: pick or upload data, see it, pick a model or recipe, set the main hyperparameters, and
see the resolved config exactly as `vislab train --print-config` would print it."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import yaml

from vislab.config import Config, flatten, merge, parse_overrides, read_yaml, to_yaml
from vislab.data import dataset_task, registered_datasets, with_augment_defaults
from vislab.data.folder import subfolders, train_root
from vislab.data.registry import shown_name
from vislab.errors import VislabError
from vislab.models import count_parameters, create_model, registered_models
from vislab.recipes import list_recipes, recipe_path
from vislab.tasks import get_task, load_config
from vislab.ui.audit import apply_audit, audit_data
from vislab.ui.common import Context, failure, guarded
from vislab.ui.uploads import data_spec, inside, unpack_zip, uploads_folder

HYPERPARAMETERS = ("epochs", "batch_size", "optim.lr", "image_size")
EMPTY_COUNTS = '{"headers": ["class", "train", "val"], "data": [], "metadata": null}'  # in the browser
SERVER_KEYS = ("runs_dir", "data_dir")  # where the server writes: not the page's to choose
DEFAULT_MODEL = "(the task's default)"
UPLOAD_LABEL = "or upload a zip of class folders"
DOWNLOAD_PROGRESS = gr.Progress(track_tqdm=True)  # a dataset download's tqdm bar, shown on the page


@dataclass
class Setup:
    """The components the Train tab reads to start a run."""

    inputs: list[gr.components.Component]
    command: gr.Textbox
    resolve_defaults: Callable  # fills `shown` when the page opens
    shown: list[gr.components.Component]


def builtin_datasets() -> list[str]:
    return [name for name in registered_datasets() if shown_name(name) == name]


def recipe_choices(context: Context) -> list[tuple[str, str]]:
    own = sorted((context.runs_dir / "recipes").glob("*.yaml"))
    return [("(none)", "")] + [(r.name, r.name) for r in list_recipes()] + [(p.stem, str(p)) for p in own]


def defaults_shown(flat: dict) -> list[dict]:
    """Placeholders of the hyperparameter fields: the resolved values an empty field stands for; and what
    the pretrained switch's first choice stands for."""
    shown = {key: flat[key] for key in HYPERPARAMETERS}
    shown["image_size"] = shown["image_size"] or "from the data"
    weights = "ImageNet weights" if flat["pretrained"] else "no pretrained weights"
    return [{"placeholder": f"{shown[key]}"} for key in HYPERPARAMETERS] + [
        {"info": f"as resolved: {weights} for {flat['model']}"}
    ]


def data_value(source: str, dataset: str, folder: str) -> str:
    return dataset if source == "built-in" else data_spec(folder)


def train_args(
    recipe, source, dataset, folder, model, pretrained, epochs, batch, lr, size, extra, name
) -> list[str]:
    """The words after `vislab train` that the form stands for: the recipe, the data and model, and every
    hyperparameter field the user filled in, as typed (an empty field means what the recipe, data and
    model resolve to, shown as its placeholder); `config_of` refuses what the config refuses."""
    words = [f"data={data_value(source, dataset, folder)}"]
    if model and model != DEFAULT_MODEL:
        words.append(f"model={model}")
    if pretrained:
        words.append(f"pretrained={pretrained}")
    words += [line.strip() for line in (extra or "").splitlines() if line.strip()]
    for word in words:
        if word.split("=", 1)[0].strip() in SERVER_KEYS:  # the page writes only inside its runs folder
            raise VislabError(
                f"{word.split('=', 1)[0].strip()} is the server's: vislab ui --runs DIR sets it"
            )
    for key, value in zip(HYPERPARAMETERS, (epochs, batch, lr, size)):
        if value is not None and str(value).strip():
            words.append(f"{key}={str(value).strip()}")
    if name:
        words.append(f"name={name}")
    return (["--config", recipe] if recipe else []) + words


def sweep_words(
    words: list[str], models: list[str] | None, lrs: str, more: str
) -> tuple[list[str], str | None]:
    """`vislab sweep` keys from the form's `vislab train` keys and the grid's fields (a gridded key's single
    value from the form gives way to its grid), and the study's name: the form's run name."""
    grid = {}
    if models:
        grid["model"] = list(models)
    if lrs and lrs.strip():
        grid["optim.lr"] = [v.strip() for v in lrs.split(",") if v.strip()]
    for line in (more or "").splitlines():
        key, sep, values = line.partition("=")
        if not line.strip():
            continue
        if not sep or not key.strip():
            raise VislabError(f"grid line {line.strip()!r} is not of the form key=a,b,...")
        grid[key.strip()] = [v.strip() for v in values.split(",") if v.strip()]
    if not grid:
        raise VislabError("nothing to grid: pick models, type learning rates, or add key=a,b lines")
    study = next((w.split("=", 1)[1] for w in words if w.startswith("name=")), None)
    kept = [w for w in words if w.split("=", 1)[0] not in grid and not w.startswith("name=")]
    return kept + [f"{key}=grid({','.join(values)})" for key, values in grid.items()], study


def models_for(source: str, dataset: str, folder: str) -> list[str]:
    """The model list for the data's task (every model where the data cannot be told yet)."""
    try:
        task = dataset_task(data_value(source, dataset, folder))
    except (VislabError, OSError):
        return [DEFAULT_MODEL, *registered_models()]
    return [DEFAULT_MODEL, *(name for name, entry in registered_models().items() if entry.task == task)]


def folder_classes(folder: str) -> int | None:
    """The number of classes of a dataset folder, or None: classes.txt's names for segmentation, else the
    class folders (of train/ where there is one), counted without listing their images."""
    try:
        kind, _, path = data_spec(folder).partition(":")
    except VislabError:  # not a folder (yet): the line beside the field says so
        return None
    root = Path(path)
    if kind == "segfolder":
        names = root / "classes.txt"
        listed = names.read_text().splitlines() if names.is_file() else []
        return sum(1 for name in listed if name.strip()) or None
    return len(subfolders(train_root(root))) or None


def model_line(config: Config, source_kind: str, dataset_name: str, folder_path: str, chosen: str) -> str:
    """The model the whole form resolves to (its default follows the data: for a folder of photos, a
    pretrained one), with its parameters for the folder's classes."""
    entry = registered_models().get(config.model)
    size = entry.input_size if entry else 224
    classes = folder_classes(folder_path) if source_kind == "folder" else None  # built-in: not read
    params = parameters_of(config.model, classes or 10, size, json.dumps(config.model_args, sort_keys=True))
    head = f"the folder's {classes} classes" if classes else "10 classes; the head fits the data"
    line = f"{config.model}: {params:,} parameters (with {head}), designed for {size} px"
    return f"the default for this data, {line}" if chosen in ("", None, DEFAULT_MODEL) else line


@functools.lru_cache(maxsize=64)
def parameters_of(model: str, classes: int, size: int, model_args: str) -> int:
    """Built once per model and options, not at every keystroke in the form."""
    return count_parameters(create_model(model, classes, 3, size, **json.loads(model_args)))


def unpacked_here(context: Context, folder: str) -> bool:
    """Whether the folder box points at an upload (the zip shown beside it is then the folder's)."""
    return bool((folder or "").strip()) and inside(folder, uploads_folder(context.runs_dir))


def config_of(args: list[str]) -> Config:
    recipe = args[1] if args[:1] == ["--config"] else None
    words = args[2:] if recipe else args
    return load_config(recipe_path(recipe) if recipe else None, words)


def build(context: Context) -> Setup:
    gr.Markdown("Pick data and a model; the resolved config below is what **Train** starts.")
    with gr.Row():
        with gr.Column(scale=1):
            source = gr.Radio(["built-in", "folder"], value="built-in", label="data", elem_id="source")
            dataset = gr.Dropdown(
                builtin_datasets(), value="digits", label="built-in dataset", elem_id="dataset"
            )
            folder = gr.Textbox(
                label="folder (class folders, or {train,val}/{images,masks} with classes.txt)",
                elem_id="folder",
            )
            upload = gr.File(label=UPLOAD_LABEL, file_types=[".zip"], elem_id="zip")
            look = gr.Button("Check data (downloads a missing built-in dataset)", elem_id="check-data")
            audit = gr.Button("Audit: bad files, leaks, label issues (vislab check)", elem_id="audit")
        with gr.Column(scale=1):
            recipe = gr.Dropdown(recipe_choices(context), value="", label="recipe", elem_id="recipe")
            model = gr.Dropdown(
                [DEFAULT_MODEL, *registered_models()],
                value=DEFAULT_MODEL,
                allow_custom_value=True,
                label="model (or type timm:NAME, FILE.py:NAME, package.module:NAME)",
                elem_id="model",
            )
            parameters = gr.Markdown(elem_id="parameters")
            gr.Markdown("Empty fields take what the data, model and recipe resolve to (shown in grey).")
            hints = defaults_shown(flatten(load_config().model_dump()))
            pretrained = gr.Radio(
                [("as resolved", ""), ("yes", "true"), ("no", "false")],
                value="",
                label="start from ImageNet weights (pretrained)",
                elem_id="pretrained",
                **hints[4],
            )
            with gr.Row():
                # Text, not number fields: a number field has no empty state (it sends 0).
                epochs = gr.Textbox(label="epochs", elem_id="epochs", **hints[0])
                batch = gr.Textbox(label="batch size", elem_id="batch-size", **hints[1])
                lr = gr.Textbox(label="learning rate", elem_id="lr", **hints[2])
                size = gr.Textbox(label="image size", elem_id="image-size", **hints[3])
            extra = gr.Textbox(label="more keys, one key=value per line", lines=2, elem_id="extra")
            name = gr.Textbox(label="run name (empty: <data>-<model>-<n>)", elem_id="run-name")
    with gr.Accordion("Sweep: train a grid of runs (vislab sweep)", open=False, elem_id="grid"):
        gr.Markdown(
            "Every combination of the values below, each an ordinary run in runs/&lt;study&gt;/trial-N; the "
            "form above gives everything else. Results lists the sweep as a group."
        )
        with gr.Row():
            grid_models = gr.Dropdown(
                list(registered_models()), multiselect=True, label="models", elem_id="grid-models"
            )
            grid_lrs = gr.Textbox(label="learning rates, e.g. 0.01, 0.05, 0.1", elem_id="grid-lrs")
        grid_extra = gr.Textbox(
            label="more grid keys, one key=a,b,... per line", lines=2, elem_id="grid-extra"
        )
        grid_start = gr.Button("Start the grid", elem_id="grid-start")
    message = gr.Markdown(elem_id="setup-message")  # what the buttons report
    config_message = gr.Markdown(elem_id="config-message")  # whether the form resolves to a config
    command = gr.Textbox(label="the same run from a shell", interactive=False, elem_id="command")
    with gr.Row():
        with gr.Column():
            resolved = gr.Code(language="yaml", label="resolved config", elem_id="resolved")
            with gr.Row():
                recipe_name = gr.Textbox(label="save as recipe named", scale=2)
                save = gr.Button("Save recipe", scale=1)
        with gr.Column():
            summary = gr.Markdown(elem_id="data-summary")
            counts = gr.Dataframe(
                headers=["class", "train", "val"],
                label="images per class and split",
                interactive=False,
                elem_id="counts",
            )
            # Whole pictures: a mask's legend is wider than a square thumbnail.
            samples = gr.Gallery(
                label="samples", columns=6, height=360, elem_id="samples", object_fit="contain"
            )
            audit_summary = gr.Markdown(elem_id="audit-summary")
            audit_pictures = gr.Gallery(
                label="audit: leaks and label issues", columns=2, elem_id="audit-pictures"
            )
            with gr.Row():
                confirm = gr.Checkbox(
                    label="yes, move the files the fixes name (removed ones are kept in the audit's folder)",
                    value=False,
                    elem_id="apply-confirm",
                )
                apply = gr.Button("Apply the audit's fixes", elem_id="apply-fixes")

    form = [recipe, source, dataset, folder, model, pretrained, epochs, batch, lr, size, extra, name]

    @guarded(3, cleared=True)  # an invalid form stands for no command, no config and no model line
    def resolve(*values):
        args = train_args(*values)
        config = config_of(args)
        command_line = "vislab train " + " ".join(args)
        try:
            line = model_line(config, *values[1:5])
        except Exception:  # a model that cannot be built says so when the run starts, in one line
            line = ""
        return "", command_line, to_yaml(with_augment_defaults(config)), line

    def pick_recipe(chosen):
        """A recipe chosen fills the data and model fields; the hyperparameter fields are emptied, to show
        the recipe's values as their defaults."""
        values = read_yaml(recipe_path(chosen)) if chosen else {}
        data = values.get("data", "digits")
        builtin = data in builtin_datasets()
        return (
            "built-in" if builtin else "folder",
            data if builtin else "digits",
            "" if builtin else data.split(":", 1)[-1],
            values.get("model", DEFAULT_MODEL),
            "",  # pretrained: as the recipe says
            *[""] * len(HYPERPARAMETERS),
        )

    def show_defaults(recipe_name, source_kind, dataset_name, folder_path, model_name, extra_keys):
        """What each empty hyperparameter field stands for now, as its placeholder: the fields' values are
        never written here, so nothing typed is lost to a late answer."""
        try:
            data = (source_kind, dataset_name, folder_path)
            args = train_args(recipe_name, *data, model_name, "", *[None] * 4, extra_keys, "")
            flat = flatten(config_of(args).model_dump())
        except (VislabError, OSError):  # said by the config's own message, from `resolve`
            return [gr.update()] * (len(HYPERPARAMETERS) + 1)
        return [gr.update(**hint) for hint in defaults_shown(flat)]

    @guarded(3)
    def check(*values, progress=DOWNLOAD_PROGRESS):
        config = config_of(train_args(*values))
        preview = get_task(config.task).preview(config)
        table = {"headers": preview.columns, "data": preview.rows}
        return "", preview.summary, table, preview.samples

    @guarded(3)
    def run_audit(*values, progress=DOWNLOAD_PROGRESS):
        config = config_of(train_args(*values))
        written, summary_text, pictures = audit_data(context.runs_dir, config)
        return written, summary_text, pictures, False

    @guarded(2)
    def apply_fixes(confirmed, *values):
        return apply_audit(context.runs_dir, config_of(train_args(*values)), confirmed), "", False

    @guarded(3)
    def unpack(file):
        if file is None:
            return gr.update(), gr.update(), gr.update(), gr.update()
        target = uploads_folder(context.runs_dir) / Path(file).stem
        suffix = 1
        while target.exists():
            suffix += 1
            target = target.with_name(f"{Path(file).stem}-{suffix}")
        root = unpack_zip(Path(file), target)
        # Said on the zip box itself: the data panels are emptied as the folder box changes.
        said = gr.update(label=f"{Path(file).name}: unpacked into {root.parent.name}/{root.name}")
        return "", "folder", str(root), said

    @guarded(0)
    def save_recipe(recipe_name, *values):
        if not recipe_name or not recipe_name.replace("_", "").replace("-", "").isalnum():
            return failure("a recipe name is letters, digits, - and _")
        args = train_args(*values)
        chosen = args[1] if args[:1] == ["--config"] else None
        words = [w for w in (args[2:] if chosen else args) if not w.startswith("name=")]
        values = merge(read_yaml(recipe_path(chosen)) if chosen else {}, parse_overrides(words))
        config_of(args)  # refuses what training would refuse
        path = context.runs_dir / "recipes" / f"{recipe_name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# {recipe_name}: saved from vislab ui\n" + yaml.safe_dump(values, sort_keys=False))
        return f"saved {path}; train it with: vislab train --config {path}"

    @guarded(0)
    def start_grid(models, lrs, more, *values):
        from vislab.sweeps import plan_sweep

        args = train_args(*values)
        recipe = args[1] if args[:1] == ["--config"] else None
        words, study = sweep_words(args[2:] if recipe else args, models, lrs, more)
        plan_sweep(recipe_path(recipe) if recipe else None, parse_overrides(words), study=study)  # or refused
        options = (["--config", recipe] if recipe else []) + (["--study", study] if study else [])
        job = context.jobs.train([*options, *words], command="sweep")
        return f"job {job.number} queued: {job.title}"

    grid_start.click(start_grid, [grid_models, grid_lrs, grid_extra, *form], message)

    outputs = [config_message, command, resolved, parameters]
    for component in form:
        # One queue for every field's listener: otherwise an older field's answer can land after a newer
        # one's and show a command without the latest edit (seen as a lost run name in the browser test).
        component.change(resolve, form, outputs, show_progress="hidden", concurrency_id="setup-resolve")
    for component in (recipe, source, dataset, folder, model, extra):
        component.change(
            show_defaults,
            [recipe, source, dataset, folder, model, extra],
            [epochs, batch, lr, size, pretrained],
            show_progress="hidden",
        )
    recipe.change(pick_recipe, recipe, [source, dataset, folder, model, pretrained, epochs, batch, lr, size])
    upload.upload(unpack, upload, [message, source, folder, upload])
    # What the panels showed was another data's: emptied in the browser itself the moment the data
    # changes, so a reply from the server (a Check that came after the change) can never be emptied late.
    data_panels = [message, summary, counts, samples, audit_summary, audit_pictures, confirm]
    for component in (source, dataset, folder):
        component.change(None, None, data_panels, js=f"() => ['', '', {EMPTY_COUNTS}, null, '', null, false]")
    folder.change(
        lambda path, uploaded: (
            gr.update(value=None, label=UPLOAD_LABEL)
            if uploaded and not unpacked_here(context, path)
            else gr.update()
        ),
        [folder, upload],
        upload,
        show_progress="hidden",
    )
    look.click(check, form, [message, summary, counts, samples])
    audit.click(run_audit, form, [message, audit_summary, audit_pictures, confirm])
    apply.click(apply_fixes, [confirm, *form], [message, audit_summary, confirm])
    for component in (source, dataset, folder):  # the model list follows the data's task
        component.change(
            lambda *data: gr.update(choices=models_for(*data)),
            [source, dataset, folder],
            model,
            show_progress="hidden",
        )
    save.click(save_recipe, [recipe_name, *form], message).then(
        lambda: gr.update(choices=recipe_choices(context)), None, recipe
    )
    return Setup(form, command, lambda: resolve(*(c.value for c in form)), outputs)
