"""The report as documents: one self-contained HTML file (images embedded) and a Markdown summary."""

from __future__ import annotations

import base64
import html
import sys
from dataclasses import dataclass, field
from pathlib import Path

from vislab.files import write_atomically


@dataclass
class ReportOptions:
    split: str = "val"
    tsne: bool = True  # the slowest step on large validation sets
    cam: bool = True
    tsne_points: int = 2000
    gallery: int = 12  # images in the misclassified gallery, and in each Grad-CAM grid


def progress(message: str) -> None:
    """A report step's progress, on stderr so that stdout stays the command's result."""
    print(f"report: {message}", file=sys.stderr, flush=True)


STYLE = """
body { font-family: system-ui, sans-serif; margin: 0 auto; max-width: 1200px; padding: 1rem 2rem; }
nav a { margin-right: 1rem; }
section { margin: 2rem 0; border-top: 1px solid #ddd; }
img { max-width: 100%; height: auto; display: block; margin: 0.5rem 0; }
table { border-collapse: collapse; margin: 0.5rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.note { color: #666; }
"""


@dataclass
class Table:
    header: list[str]
    rows: list[list]

    def html(self) -> str:
        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in self.header)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(cell(v))}</td>" for v in row) + "</tr>" for row in self.rows
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def markdown(self) -> str:
        lines = ["| " + " | ".join(self.header) + " |", "|" + "---|" * len(self.header)]
        lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in self.rows]
        return "\n".join(lines)


def cell(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


@dataclass
class Section:
    id: str
    title: str
    images: list[Path] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    note: str = ""
    html: str = ""  # markup vislab made (a sweep's plotly figures); HTML only, not in Markdown


def embedded_image(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def write_html(path: Path, title: str, sections: list[Section]) -> None:
    nav = "".join(f'<a href="#{s.id}">{html.escape(s.title)}</a>' for s in sections)
    parts = [
        f"<!doctype html>\n<html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1><nav>{nav}</nav>",
    ]
    for section in sections:
        parts.append(f'<section id="{section.id}"><h2>{html.escape(section.title)}</h2>')
        if section.note:
            parts.append(f'<p class="note">{html.escape(section.note)}</p>')
        parts += [table.html() for table in section.tables]
        parts += [embedded_image(image, f"{section.title}: {image.stem}") for image in section.images]
        parts.append(section.html)
        parts.append("</section>")
    parts.append("</body></html>\n")
    write_atomically(path, "\n".join(parts))


def write_markdown(path: Path, title: str, sections: list[Section]) -> None:
    parts = [f"# {title}"]
    for section in sections:
        parts.append(f"\n## {section.title}\n")
        if section.note:
            parts.append(f"_{section.note}_\n")
        parts += [table.markdown() + "\n" for table in section.tables]
        parts += [f"![{section.title}]({image.name})" for image in section.images]
    write_atomically(path, "\n".join(parts) + "\n")
