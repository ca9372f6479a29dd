"""The Data tab's audit: `vislab check` on the form's data, its fixes listed, and applied on request, only
to data the page owns (a folder inside its runs folder: an upload)."""

from __future__ import annotations

import json
from pathlib import Path

from vislab.check import check_dataset, summary_lines
from vislab.check.fix import apply_plan, plan_fixes
from vislab.config import Config
from vislab.errors import VislabError
from vislab.ui.uploads import inside, uploads_folder

LISTED = 8  # fixes named on the page; the rest are counted


def audit_folder(runs_dir: Path, config: Config) -> Path:
    return runs_dir / "check" / (Path(config.data.split(":", 1)[-1]).name or config.data)


def page_owns(runs_dir: Path, config: Config) -> bool:
    """Data the page may change: a folder unpacked from an upload, never the server's other files (nor
    the runs themselves)."""
    kind, _, path = config.data.partition(":")
    return kind in ("folder", "segfolder") and inside(path, uploads_folder(runs_dir))


def fixes_text(plan: list[dict], config: Config, owned: bool) -> str:
    if not plan:
        return "No fixes to apply."
    if not owned:
        return (
            f"{len(plan)} fixes. The page changes only data inside its runs folder (uploads); for this "
            f"folder run: `vislab check {config.data} --apply`"
        )
    named = [f"- {step['action']} {Path(step['file']).name}: {step['reason']}" for step in plan[:LISTED]]
    more = [f"- ... and {len(plan) - LISTED} more"] if len(plan) > LISTED else []
    listed = "\n".join(named + more)
    return f"{len(plan)} fixes:\n{listed}\n\nTick the box and press **Apply the audit's fixes**."


def audit_data(runs_dir: Path, config: Config) -> tuple[str, str, list[tuple[str, str]]]:
    """What the Audit button shows: where the page was written, the findings with the fixes, pictures."""
    out = audit_folder(runs_dir, config)
    findings = check_dataset(config, out)
    lines = "\n".join(f"- {line}" for line in summary_lines(findings))
    pictures = [(str(out / f), f) for f in ("leaks.png", "label_issues.png") if (out / f).is_file()]
    fixes = fixes_text(plan_fixes(findings), config, page_owns(runs_dir, config))
    return f"wrote {out / 'check.html'}", f"{lines}\n\n{fixes}", pictures


def apply_audit(runs_dir: Path, config: Config, confirmed: bool) -> str:
    """The last audit's fixes carried out, once confirmed, on data the page owns."""
    out = audit_folder(runs_dir, config)
    if not (out / "check.json").is_file():
        raise VislabError("press Audit first: the fixes come from its findings")
    if not page_owns(runs_dir, config):
        raise VislabError(
            "the page changes only data inside its runs folder (uploads); run: "
            f"vislab check {config.data} --apply"
        )
    if not confirmed:
        raise VislabError("tick 'yes, move the files' first: nothing was moved")
    plan = plan_fixes(json.loads((out / "check.json").read_text()))
    root = Path(config.data.partition(":")[2]).expanduser().resolve()
    strays = [
        s["file"]
        for s in plan
        if not inside(s["file"], root) or (s["target"] and not inside(s["target"], root))
    ]
    if strays:  # an audit of other data (of the same folder name), or a file list pointing elsewhere
        raise VislabError(
            f"the last audit's fixes name files outside {root} ({strays[0]}): press Audit again"
        )
    moved = apply_plan(plan, out / "removed")
    return f"moved {moved} files (removed ones into {out / 'removed'}); press Audit to check again"
