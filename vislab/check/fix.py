"""The fixes a check suggests, as a plan: remove unreadable files, the training copy of every leak and the
second copy of every duplicate, and move confidently mislabelled images to the class they look like.
Nothing is touched unless the plan is applied, and then "remove" moves a file into a folder beside the
check's output instead of deleting it."""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

from vislab.errors import VislabError
from vislab.files import write_atomically

# A label issue becomes a suggested move when its given label is this unlikely and another is likely.
MOVE_BELOW, MOVE_ABOVE = 0.05, 0.6
SPLIT_ORDER = ["test", "val", "train"]  # a leak keeps the evaluation split's copy


def plan_fixes(findings: dict) -> list[dict]:
    plan: dict[str, dict] = {}

    def add(action: str, file: str, target: str, reason: str) -> None:
        if Path(file).is_absolute() and file not in plan:
            plan[file] = {"action": action, "file": file, "target": target, "reason": reason}

    for record in findings["unreadable"]:
        add("remove", record["file"], "", record["problem"])
    for record in findings["leaks"]:
        pair = sorted(
            [(record["first"], record["first_split"]), (record["second"], record["second_split"])],
            key=lambda p: SPLIT_ORDER.index(p[1]),
        )
        add("remove", pair[1][0], "", f"{record['kind']} copy of {pair[0][1]} image {pair[0][0]}")
    for record in findings["duplicates"]:
        add("remove", record["second"], "", f"{record['kind']} copy of {record['first']}")
    for record in findings["label_issues"]:
        if record["given_probability"] < MOVE_BELOW and record["suggested_probability"] > MOVE_ABOVE:
            source = Path(record["file"])
            target = source.parent.parent / record["suggested"] / source.name
            add(
                "move",
                record["file"],
                str(target),
                f"labelled {record['given']}, looks like {record['suggested']}",
            )
    return list(plan.values())


def write_plan(plan: list[dict], path: Path) -> Path:
    table = io.StringIO()
    writer = csv.DictWriter(table, ["action", "file", "target", "reason"])
    writer.writeheader()
    writer.writerows(plan)
    write_atomically(path, table.getvalue())
    return path


def apply_plan(plan: list[dict], removed: Path) -> int:
    """Carries the plan out; returns how many files it moved. A file already gone is skipped."""
    done = 0
    for step in plan:
        source = Path(step["file"])
        if not source.exists():
            continue
        target = (
            Path(step["target"]) if step["action"] == "move" else removed / source.relative_to(source.anchor)
        )
        if target.exists():
            raise VislabError(f"cannot {step['action']} {source}: {target} already exists")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(source, target)
        done += 1
    return done
