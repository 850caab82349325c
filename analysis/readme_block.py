"""The README's results block: the report's headline, its framework-parts table and each study's verdict in a line,
cut from the report that `make report` has just built, and written between two markers in README.md.

The README used to carry hand-copied tables of the report; they drifted from the exports (a bench rerun changed
the loss rows, the README kept the old ones). Cut from the built report, the block cannot disagree with it, and
the test that rebuilds the report from a fresh clone's exports checks the README's block too.
"""

from __future__ import annotations

import re
from pathlib import Path

from .headline import TITLE

START = "<!-- results: written by `make report` from results/ (analysis/readme_block.py); do not edit by hand -->"
END = "<!-- /results -->"
_SENTENCE = re.compile(r".+?\.(?=\s|$)")


def sections(md: list[str]) -> dict[str, list[str]]:
    """The report's `## ` sections by title, each without its title line and surrounding blank lines."""
    out: dict[str, list[str]] = {}
    title = None
    for line in md:
        if line.startswith("## "):
            title = line[3:].strip()
            out[title] = []
        elif title is not None:
            out[title].append(line)
    return {t: _strip_blank(body) for t, body in out.items()}


def _strip_blank(lines: list[str]) -> list[str]:
    while lines and not lines[0].strip():
        lines = lines[1:]
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    return lines


def verdict_line(body: list[str], at_least: int = 100, at_most: int = 320) -> str | None:
    """A section's verdict cut to its first sentence, or its first two when the first is shorter than
    ``at_least`` characters and both together are at most ``at_most``."""
    verdict = next((line for line in body if line.startswith("**Verdict.** ")), None)
    if verdict is None:
        return None
    text = verdict[len("**Verdict.** "):].strip()
    ends = [m.end() for m in _SENTENCE.finditer(text)][:2] or [len(text)]
    cut = ends[1] if len(ends) == 2 and ends[0] < at_least and ends[1] <= at_most else ends[0]
    return text[:cut] + (" …" if cut < len(text) else "")


def anchor(title: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def block(md: list[str], report: str = "report/REPORT.md", links: dict[str, str] | None = None) -> list[str]:
    """The README block cut from the report's markdown lines (``md``: the report's and, after them, each study
    file's); ``links``: where a section that lives in its own file is read (title → path), else the report's
    anchor."""
    secs = sections(md)
    links = links or {}
    out = [START, ""]
    folder = report.rsplit("/", 1)[0] + "/" if "/" in report else ""
    for title in ("Abstract", "Results", "Compute", "Headline", TITLE, "Each framework part"):
        if title in secs:  # the held-out claim first, then the development tiles' headline
            body = [re.sub(r"\]\((?!https?:|/)([^)#]+\.png)\)", lambda m: f"]({folder}{m.group(1)})", line)
                    for line in secs[title]]  # a figure's path, relative to the README
            out += [f"**{title}** ([report]({report}#{anchor(title)}))", ""] + body + [""]
    studies = [(t, verdict_line(body)) for t, body in secs.items() if t.startswith(("Study: ", "Sweep: "))]
    if studies:
        out += ["**Each study in one line** (question, hypothesis, process, table, figure and the whole verdict in "
                "the report's section):", ""]
        out += [f"* [{t}]({links.get(t, f'{report}#{anchor(t)}')}): {v or 'no verdict yet.'}" for t, v in studies]
        out += [""]
    return out + [END]


def replace_block(readme: Path, lines: list[str]) -> None:
    """Write ``lines`` between the markers of ``readme``; an error when the README has no (or a broken) block."""
    text = readme.read_text()
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        raise ValueError(f"{readme}: needs one line {START!r} and, after it, one line {END!r} "
                         "where `make report` writes the results block")
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    readme.write_text(head + "\n".join(lines) + tail)


def committed_block(readme: Path) -> list[str]:
    """The block as it stands in ``readme`` (markers included)."""
    text = readme.read_text()
    return (START + text.split(START, 1)[1].split(END, 1)[0] + END).split("\n")
