"""`make report`: the committed exports (results/) and study files (experiments/studies/) → report/REPORT.md + PNGs.

Reads only committed files, trains nothing, and is deterministic (seeded bootstrap, no timestamps in the PNGs), so
a fresh clone's ``make report`` rebuilds the report exactly as committed. No number is typed in here: the method
section reads the schedule from the config defaults, each study section reads its question and hypothesis from
its study file and its numbers from its exports.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from pointseg.bench.predict import markdown_table as predict_table
from pointseg.bench.predict_parts import markdown_table as parts_table
from pointseg.bench.table import markdown_table
from sweeps.evaluations import describe_shift, is_evaluation, settings_of
from sweeps.studyfile import StudyFile  # noqa: E402

from .figures import _DIAGNOSTICS, _PNG, budget_figure, figures_of  # noqa: E402
from .headline import (
    parts_section,  # noqa: E402
    study_headline,
)
from .heldout import pooled
from .heldout import section as heldout_section
from .limitations import limitations_section  # noqa: E402
from .method import method_section  # noqa: E402
from .readme_block import anchor, block, replace_block, sections, verdict_line  # noqa: E402
from .reruns import reruns_section  # noqa: E402
from .results import frame, load_records, paired_on_shared_seeds  # noqa: E402
from .stats import interval  # noqa: E402
from .summarize import study_table  # noqa: E402
from .summary import summary_section  # noqa: E402
from .sweep_report import sweep_sections  # noqa: E402


def study_section(study: StudyFile, out: Path, root: Path) -> list[str]:
    recs = load_records(study.name, root)
    planned = len(study.seeds) * len(study.cells)
    done = {(r["cell"], r["seed"]) for r in recs}
    md = [f"## Study: {study.name}", "", f"**Question.** {study.question}", "",
          f"**Hypothesis** (written before the runs). {study.hypothesis}", "",
          f"**Process.** `python -m sweeps {study.path}`; base `{study.base}`"
          + (f" with {', '.join(f'`{o}`' for o in study.overrides)}" if study.overrides else "")
          + f"; seeds {', '.join(map(str, study.seeds))}; cells:", ""]
    md += [f"* `{c.id}` ({c.label}): {_cell_process(c)}" for c in study.cells]
    md += ["", f"Runs finished and exported: **{len(done)} of {planned}**.", ""]
    if not recs:
        return md + ["No exports yet.", ""]
    commits = sorted({(r['code'] or {}).get('commit', '?')[:10] + ('+dirty' if (r['code'] or {}).get('dirty') else '')
                      for r in recs})
    md += [f"Code versions of these runs: {', '.join(f'`{c}`' for c in commits)}.", "", "**Results.**", ""]
    if study.folds():  # a cross-validation study: a row per fold and the pooled claim, not a row per cell
        verdict = study.raw.get("verdict")
        return md + heldout_section(study, root) + ["**Verdict.** " + (
            fill_numbers(verdict.strip(), frame(recs), recs, study, root) if verdict else
            f"pending: {len(done)} of its {planned} runs are finished and exported."), ""]
    md += [study_table(study.name, study.reference, study.metric, root, references=study.cell_references(),
                       order=[c.id for c in study.cells], development=study.development).to_markdown(index=False), ""]
    ceiling = study.raw.get("ceiling")
    if ceiling and ceiling in done_cells(recs):
        table = study_table(study.name, ceiling, study.metric, root, order=[c.id for c in study.cells])
        cols = ["cell", "seeds"] + [c for c in table.columns if c.startswith(("÷", "−"))]
        md += [f"Against the ceiling (`{ceiling}`), paired by seed and test image:", "",
               table[cols].to_markdown(index=False), ""]
    recomputed = Path(root) / study.name / "pseudo-labels.json"
    md += _pseudo_label_table(recs, json.loads(recomputed.read_text()) if recomputed.exists() else None)
    md += _last_epoch_diagnostics(recs, show_test=not study.development)
    compare = [r for other in study.raw.get("compare", []) for r in load_records(other, root)]
    for fig in figures_of(study):
        name = fig(study, recs, out, compare) if fig is budget_figure else fig(study, recs, out)
        if name:
            md += [f"![{study.name}]({name})", ""]
    verdict = study.raw.get("verdict")
    md += ["**Verdict.** " + (fill_numbers(verdict.strip(), frame(recs), recs) if verdict else
                              (f"pending: {len(done)} of its {planned} runs are finished and exported."
                               if len(done) < planned else "pending: every run is finished; the verdict is not "
                               "written yet.")), ""]
    return md


def _pseudo_label_table(recs: list[dict], recomputed: dict | None = None) -> list[str]:
    """Self-trained runs: what their teacher labelled, measured against the dense masks (recorded, never used);
    per class from the runs' own record or, for runs that recorded only totals, from ``recomputed``
    (results/<study>/pseudo-labels.json, recomputed once from the teachers' weights in commit 10fa9b0)."""
    rows, per_class = [], []
    for r in sorted(recs, key=lambda r: (r["cell"], r["seed"])):
        st = (r.get("points") or {}).get("selftrain")
        if not st:
            continue
        bar = (f"per class: {st['proportion']:g} of each, ≤ {st['threshold']:g}" if st.get("proportion")
               else f"{st['threshold']:g}")
        teacher = f"`{st['teacher_name']}` seed {st['teacher_seed']}" + (" (D4 TTA)" if st.get("tta") else "")
        rows.append({"cell": r["cell"], "seed": r["seed"], "teacher": teacher,
                     "threshold": bar,
                     "coverage": st["diagnostic"]["pseudo_coverage"],
                     "precision": st["diagnostic"]["pseudo_precision"]})
        stored = (recomputed or {}).get(f"{r['cell']}/seed{r['seed']}") or {}
        classes = st["diagnostic"].get("per_class") or stored.get("diagnostic", {}).get("per_class")
        bars = st.get("class_thresholds") or {}
        for name, v in (classes or {}).items():
            per_class.append({"cell": r["cell"], "class": name, "bar": bars.get(name, st["threshold"]), **v})
    if not rows:
        return []
    md = ["Pseudo-labels of the self-trained runs, against the training images' dense masks (a diagnostic, never "
          "used): coverage = share of the unclicked labelled pixels that got one, precision = share of those "
          "that is right.", "", pd.DataFrame(rows).to_markdown(index=False, floatfmt=".3f"), ""]
    if per_class:
        df = pd.DataFrame(per_class).astype({"bar": float, "coverage": float, "precision": float})
        table = df.groupby(["cell", "class"], sort=False)[["bar", "coverage", "precision"]].mean().reset_index()
        for col in ("bar", "coverage", "precision"):  # a class no pixel or no label had: a dash, not "nan"
            table[col] = table[col].map(lambda v: "—" if pd.isna(v) else f"{v:.3f}")
        md += ["Per class, mean over the seeds: bar = the teacher's probability a pseudo-label needed, coverage = "
               "share of the class's unclicked pixels that got a pseudo-label, precision = share of the pseudo-labels "
               "naming the class that are right.", "",
               table.to_markdown(index=False, disable_numparse=True), ""]
    return md


_LAST_EPOCH = {k: _DIAGNOSTICS[k] for k in ("diag/pseudo_coverage", "diag/pseudo_precision", "diag/unlabelled_acc")}


def _last_pseudo_rows(recs: list[dict]) -> list[tuple[dict, dict]]:
    """(run, its last history row with a pseudo-label precision) for the runs with a teacher, by cell and seed."""
    out = []
    for r in sorted(recs, key=lambda r: (r["cell"], r["seed"])):
        logged = [h for h in r.get("history") or [] if h.get("diag/pseudo_precision") is not None]
        if logged:
            out.append((r, logged[-1]))
    return out


def _last_epoch_diagnostics(recs: list[dict], show_test: bool = True) -> list[str]:
    """Runs with a teacher: the diagnostics their last pseudo-labelling epoch measured against the training crops'
    dense masks (logged, never used), beside test mIoU (not in a development study, which shows nothing of test);
    a figure's mean over seeds hides the seed that went wrong."""
    last = _last_pseudo_rows(recs)
    if not last:
        return []
    rows = [{"cell": r["cell"], "seed": r["seed"], "epoch": h.get("epoch"),
             **{name: h.get(k) for k, name in _LAST_EPOCH.items()},
             **({"test mIoU": (r.get("final") or {}).get("test/miou")} if show_test else {})} for r, h in last]
    df = pd.DataFrame(rows).dropna(axis=1, how="all")
    return ["Last pseudo-labelling epoch of each run with a teacher, against the training crops' dense masks (a "
            "diagnostic, never used): coverage = share of the unclicked pixels the teacher labelled, precision = "
            "share of those labels that is right.", "", df.to_markdown(index=False, floatfmt=".3f"), ""
            ] + _last_epoch_class_shares(last)


def _last_epoch_class_shares(last: list[tuple[dict, dict]]) -> list[str]:
    """Per run and class, at that same epoch (runs that logged it): which classes the pseudo-labels name, what the
    pixels they label are, and what all unclicked pixels are."""
    rows = []
    for r, h in last:
        for name in (k.rsplit("/", 1)[1] for k in h if k.startswith("diag/pseudo_share/")):
            rows.append({"cell": r["cell"], "seed": r["seed"], "class": name,
                         "pseudo-labels naming it": h[f"diag/pseudo_share/{name}"],
                         "pseudo-labelled pixels that are it": h.get(f"diag/pseudo_true_share/{name}"),
                         "unclicked pixels that are it": h.get(f"diag/unlabelled_share/{name}")})
    if not rows:
        return []
    return ["Per class at the same epoch (shares of the training crops' pixels, from their dense masks):", "",
            pd.DataFrame(rows).to_markdown(index=False, floatfmt=".3f"), ""]


# evaluation cells' `prior` (pointseg/prior.py): where EM finds the class mix the probabilities are re-weighted to
PRIOR_SCENES = {"train": "the training images", "tile": "each test tile's images"}


def _cell_process(c) -> str:
    if is_evaluation(c):
        s = settings_of(c)
        how = ([f"the test images {describe_shift(s['shift'])}"] if s["shift"] else []) + [
            words for k, words in (("match", "each test tile histogram-matched to the training style"),
                                   ("tta", "D4 TTA"), ("ensemble", "the mean probability of all seeds' models"))
            if s[k]] + ([f"probabilities calibrated on the val clicks, then re-weighted from the clicks' class mix "
                         f"to the one EM finds in {PRIOR_SCENES[s['prior']]}"] if s["prior"] else [])
        return (f"trains nothing: the runs of `{c.extra['evaluate']}` tested again, {'; '.join(how) or 'unchanged'}"
                + (f"; compared with `{c.extra['reference']}`" if c.extra.get("reference") else ""))
    return ((f"`{c.extra['base']}` " + ("with " if c.overrides else "as it is") if c.extra.get("base") else "")
            + f"{', '.join(f'`{o}`' for o in c.overrides) or ('' if c.extra.get('base') else 'the base config')}"
            + (f"; reuses `{c.extra['reuse']}` where identical" if c.extra.get("reuse") else ""))


def done_cells(recs: list[dict]) -> set[str]:
    return {r["cell"] for r in recs}


def fill_numbers(text: str, df, recs: list[dict] | None = None, study: StudyFile | None = None,
                 root: Path = Path("results")) -> str:
    """A verdict names numbers as ``{cell:metric}`` (mean over the cell's seeds, 3 decimals; ``{cell@1:metric}``
    one seed's run),
    ``{cell-a:metric - cell-b:metric}`` (difference of the means), ``{paired:cell-a vs cell-b}`` (test mIoU of a
    minus b on the seeds both have, with the paired bootstrap 95 % interval of the study tables) or
    ``{ratio:cell-a vs cell-b}`` (a ÷ b, likewise), and in a study with folds ``{pooled:arm vs arm}`` and
    ``{pooled-diff:arm vs arm}`` (pooled over the folds, analysis.heldout): they are read from the exports, never
    typed. The metrics
    include the per-class shares, precisions and recalls of `results.confusion_metrics`."""

    def paired(m: re.Match) -> str:
        how, pair = m.group(1), m.group(2)
        a, b = (x.strip() for x in pair.split(" vs "))
        d = paired_on_shared_seeds(recs or [], a, b, "diff" if how == "paired" else "ratio")
        if d is None:
            raise KeyError(f"verdict pairs {a!r} with {b!r}, but no seed has exports of both")
        return interval(*d[:3], signed=how == "paired")

    text = re.sub(r"\{(paired|ratio):([^{}]+)\}", paired, text)

    def pooled_over_folds(m: re.Match) -> str:  # a fold study: {pooled:best vs full}, {pooled-diff:best vs default}
        a, b = (x.strip() for x in m.group(2).split(" vs "))
        how = "diff" if m.group(1) == "pooled-diff" else "ratio"
        p = pooled(study, a, b, how, root)
        if not p["folds"]:
            raise KeyError(f"verdict pools {a!r} with {b!r}, but no fold has exports of both")
        return interval(*p["bootstrap"][:3], signed=how == "diff") + f" ({len(p['folds'])} of {p['of']} folds)"

    if study is not None:
        text = re.sub(r"\{(pooled|pooled-diff):([^{}]+)\}", pooled_over_folds, text)

    def mean(ref: str) -> float:
        cell, metric = ref.strip().split(":", 1)
        cell, _, seed = cell.partition("@")  # cell@seed: that one run, where a seed mean would hide one seed
        rows = (df.cell == cell) & (df.seed == int(seed)) if seed else df.cell == cell
        values = df.loc[rows, metric]
        if values.empty:
            raise KeyError(f"verdict names {ref!r}, but the study has no export of cell {cell!r}"
                           + (f" seed {seed}" if seed else ""))
        return float(values.mean())

    def sub(m: re.Match) -> str:
        parts = m.group(1).split(" - ")
        value = mean(parts[0]) - (mean(parts[1]) if len(parts) > 1 else 0.0)
        return f"{value:+.3f}" if len(parts) > 1 else f"{value:.3f}"

    return re.sub(r"\{([^{}]+:[^{}]+)\}", sub, text)


def bench_section(path: Path) -> list[str]:
    if not path.exists():
        return []
    b = json.loads(path.read_text())

    return [f"## Speed (`make bench`, torch {b['torch']}, {b['threads']} threads)", "", markdown_table(b["rows"]), "",
            _timed_on(b["rows"]), ""]


def _timed_on(rows: list[dict]) -> str:
    """Which CPU the bench rows were timed on (speed belongs to a CPU; rows of several runs share one file)."""
    cpus = sorted({r["cpu"] for r in rows if r.get("cpu")})
    if not cpus:
        return "The rows did not record the CPU they were timed on (rows written from now on do)."
    unknown = sum(not r.get("cpu") for r in rows)
    older = (f"; {unknown} older row did not record its CPU" if unknown == 1 else
             f"; {unknown} older rows did not record their CPU" if unknown else "")
    return "Timed on " + "; ".join(cpus) + older + "."


def byo_section(root: Path) -> list[str]:
    """The bring-your-own runs (exports outside any study, e.g. results/roads/seed0.json) and the predict bench."""
    md = []
    runs = sorted(root.glob("*/seed*.json"))  # a study's runs sit one folder deeper: <study>/<cell>/seed<k>.json
    if runs:
        md += ["## Bring your own data", "",
               "Runs on other data sets than Dubai, each described by its dataset YAML alone (exports outside the "
               "studies):", "", "| run | data set | supervision | test mIoU | per class | test images |",
               "|---|---|---|---|---|---|"]
        for p in runs:
            r = json.loads(p.read_text())
            f, c = r["final"], r["config"]
            sup = c["points"]["supervision"]
            sup = f"{c['points']['n_per_class']} clicks/class/image" if sup == "points" else "full masks"
            per = ", ".join(f"{k.removeprefix('test/iou/')} {v:.3f}" for k, v in f.items()
                            if k.startswith("test/iou/") and v is not None)
            md.append(f"| `{r['name']}` seed {r['seed']} | `{c['data']['dataset']}` | {sup} | {f['test/miou']:.3f} | "
                      f"{per} | {len(f.get('test/per_image_confusion') or {})} |")
        md += ["", "One seed each: an example of the path, not a study.", ""]
    bench = root / "bench_predict.json"
    if bench.exists():
        b = json.loads(bench.read_text())
        md += ["## Whole-scene prediction (`make bench-predict`)", "",
               "Each scene predicted in a fresh process (its start and model load included), by blocks of "
               f"{b['rows'][0]['chunk']} px; peak RSS is that process's own. The limits are the bare forward pass "
               "of the same Unet timed in the same run, as built and as predict runs it (batch norm folded into the "
               "convolutions), divided by the share of pixels it sees at the working scale. The start-up (imports, "
               f"checkpoint load) is a fixed cost per call ({_start_up(b['rows'])} in these rows), most of it torch "
               "and torch._dynamo, which torchvision imports; a folder or pattern of scenes pays it once (the `k ×` "
               "rows). `at most` is the share of built that a call would reach if it did nothing but import torch, "
               f"torchvision and timm ({_imports(b['rows'])}) and run the network as predict runs it: where it is "
               "below 0.5, no one-call prediction of that scene with these libraries can reach half the network's "
               "speed on this machine, whatever predict does. `load` is the 1-minute load average before the row "
               "(about 1 when the bench runs alone on 2 cores, its own processes counted; 2 or more beside two "
               "training lanes on 2 cores): a loaded row's share still compares two timings made under the same "
               "load, but its times are not an idle machine's. A 100 Mpx scene's inner blocks carry a halo on "
               "every side, so its peak is that of the largest block, not of the scene.", "",
               predict_table(b["rows"]), ""]
        before = root / "bench_predict_before.json"
        if before.exists():
            old = json.loads(before.read_text())
            md += [f"Before batch norm was folded, blocks were read and written beside the network and the one-pass "
                   f"halo went from 64 to 32 working-scale pixels (commit {old['code']['commit'][:7]}, the same "
                   "machine, the same session):", "", predict_table(old["rows"]), ""]
    parts = root / "bench_predict_parts.json"
    if parts.exists():
        md += ["What batch-norm folding and the smaller halo each buy once predict runs (`python -m "
               "pointseg.bench.predict_parts`: one process, best time after a warm-up call; reading and writing "
               "beside the network is in every row):", "", parts_table(json.loads(parts.read_text())["rows"]), ""]
    return md


def _span(rows: list[dict], key: str) -> str:
    return f"{min(r[key] for r in rows):.1f} to {max(r[key] for r in rows):.1f} s"


def _imports(rows: list[dict]) -> str:
    timed = [r for r in rows if r.get("import_stack_seconds") is not None]
    if not timed:
        return "not timed in these rows"
    return f"{_span(timed, 'import_stack_seconds')} here, of which torch alone {_span(timed, 'import_torch_seconds')}"


def _start_up(rows: list[dict]) -> str:
    timed = [r for r in rows if r.get("start_seconds") is not None]
    return _span(timed, "start_seconds") if timed else "not timed"


# the dashboard is where users compare runs; every run logs offline into its run directory (README: "W&B")
WANDB_SECTION = [
    "## Compare the runs in W&B", "",
    "Every run logs to W&B offline, into its run directory, with its config (clicks per class, γ, the unlabelled "
    "method and weight), `group` = its study's name, the test metrics in its summary and, at the end, a few val "
    "images with their clicks, the prediction, the truth and the errors. To compare a study in the dashboard: "
    "`wandb login`, then `wandb sync runs/studies/<study>/*/seed*/wandb/offline-run-*` (a sweep: "
    "`runs/sweeps/<name>/*/seed*/wandb/offline-run-*`); in the project's Runs table group by `Group`, add "
    "`points.n_per_class`, `loss.gamma`, `semi.weight` and `semi.method` as columns and `test/miou`, "
    "`test/group/5/miou` and `test/group/8/miou` from the summary. The run directories are not committed: this "
    "report reads the exports in `results/`, which hold the same numbers.", ""]

# the schedule first (every later study runs on it), then the headline, then what explains or moves it
def build(out: Path, studies_dir: Path = Path("experiments/studies"), root: Path = Path("results"),
          readme: Path | None = None) -> Path:
    """Write ``out``/REPORT.md (the summary), ``out``/studies/<study>.md (each study's notebook beside its
    figures), the sweeps', speed and reruns' pages, and with ``readme`` that file's results block (readme_block)."""
    out.mkdir(parents=True, exist_ok=True)
    sns.set_theme(style="whitegrid")
    np.random.seed(0)
    pages: dict[Path, list[str]] = {}
    studies_out = out / "studies"
    studies_out.mkdir(exist_ok=True)
    index, study_lines, links = [], [], {}
    studies = sorted((StudyFile.load(p) for p in studies_dir.glob("*.yaml")), key=lambda st: (st.order, st.name))
    for study in (st for st in studies if st.search is None):  # a search is the sweeps page's
        path = Path(study.path)
        lines = study_section(study, studies_out, root)
        pages[studies_out / f"{study.name}.md"] = ([f"# Study: {study.name}", "", "[← the report](../REPORT.md)"]
                                                  + lines[1:])
        index.append(index_row(study, path, lines, root))
        study_lines += lines
        links[f"Study: {study.name}"] = _rel(studies_out / f"{study.name}.md", readme)
    sweeps = sweep_sections(out, root, studies_dir, png=_PNG)
    for name, title, lines in (("sweeps", "Sweeps", sweeps), ("speed", "Speed", bench_section(root / "bench.json")),
                               ("own-data", "Other data sets and whole scenes", byo_section(root)),
                               ("reruns", "Reruns", reruns_section(root))):
        if lines:
            pages[out / f"{name}.md"] = [f"# {title}", "", "[← the report](REPORT.md)", ""] + lines
    links.update({t: f"{_rel(out / 'sweeps.md', readme)}#{anchor(t)}" for t in sections(sweeps)})
    md = ["# pointseg — technical report", "",
          "Generated by `make report` from the committed run exports in `results/` and the study files in "
          "`experiments/studies/`; it trains nothing. Every number below is read from those files. Each study's "
          "notebook (question, hypothesis, process, results, verdict) is its own page under `studies/`.", ""]
    md += summary_section(out, root, studies_dir)
    headline = _headline(studies_dir, root)
    md += headline
    md += parts_section(root)
    md += method_section(root)
    md += limitations_section(headline, root, studies_dir)
    md += ["## Studies", "", "| study | question | verdict, in a line | written | runs |", "|---|---|---|---|---|"]
    md += index + [""]
    md += ["## More pages", ""] + [f"* [{p.read_text().splitlines()[0] if p.exists() else lines[0][2:]}]({p.name})"
                                    .replace("[# ", "[") for p, lines in pages.items() if p.parent == out] + [""]
    md += reproduce_section(studies_dir, root)
    md += WANDB_SECTION
    pages[out / "REPORT.md"] = md
    for path, lines in pages.items():
        path.write_text("\n".join(lines))
    for folder in (out, studies_out):  # a page or figure of a study or sweep that is gone, or draws nothing any more
        text = "".join("\n".join(lines) for p, lines in pages.items() if p.parent == folder)
        drawn = set(re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", text))
        for f in sorted(folder.glob("*.png")) + sorted(folder.glob("*.md")):
            if f.suffix == ".png" and f.name not in drawn or f.suffix == ".md" and f not in pages:
                f.unlink()
                print(f"removed {f}: the report no longer writes it")
    if readme is not None:
        replace_block(readme, block(md + study_lines + sweeps, _rel(out / "REPORT.md", readme), links))
    return out / "REPORT.md"


def _rel(path: Path, readme: Path | None) -> str:
    """``path`` as the README links it (relative to the README's folder)."""
    return Path(os.path.relpath(path, readme.parent if readme else Path("."))).as_posix()


_WRITTEN = re.compile(r"[Ww]ritten (?:on )?(\d{4}-\d{2}-\d{2})|(\d{4}-\d{2}-\d{2})")


def index_row(study: StudyFile, path: Path, lines: list[str], root: Path) -> str:
    """The study's line in the report's index: its page, its question cut to a line, its verdict's first
    sentence, the date its file says it was written, and its runs finished of planned."""
    m = _WRITTEN.search(path.read_text())
    date = (m.group(1) or m.group(2)) if m else "—"
    q = study.question.strip()
    q = q if len(q) <= 140 else q[:140].rsplit(" ", 1)[0] + " …"
    done = len({(r["cell"], r["seed"]) for r in load_records(study.name, root)})
    planned = len(study.seeds) * len(study.cells)
    verdict = verdict_line(lines, at_least=60, at_most=200) or f"pending: {done} of its {planned} runs."
    return (f"| [{study.name}](studies/{study.name}.md) | {q} | {verdict.replace('|', '/')} | {date} | "
            f"{done} of {planned} |")


def reproduce_section(studies_dir: Path, root: Path) -> list[str]:
    md = ["## Reproduce", "", "| what | command |", "|---|---|"]
    for path in sorted(studies_dir.glob("*.yaml")):
        md.append(f"| study `{path.stem}` | `python -m sweeps {path}` |")
    return md + ["| every study's pending runs, two workers (a GPU or many cores: more; other machines: a shared "
                 "`--storage postgresql://…`) | `python -m sweeps experiments/studies/*.yaml --workers 2` |",
                 "| speed table | `make bench` (the 800-step row: `python -m pointseg.bench.training --parts reference "
                 "--config experiments/full-fast.yaml`) |", "| whole-scene prediction table | `make bench-predict` |",
                 "| the best recipe on your data | `make best DATA=path/to/my-scenes.yaml` |",
                 "| this report | `make report` |", ""]


def _headline(studies_dir: Path, root: Path) -> list[str]:
    """The headline of the first study whose file says ``headline: true``."""

    for path in sorted(studies_dir.glob("*.yaml")):
        study = StudyFile.load(path)
        if study.raw.get("headline") and study.raw.get("ceiling"):
            return study_headline(study, root)
    return []


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="report")
    ap.add_argument("--studies", default="experiments/studies")
    ap.add_argument("--results", default="results")
    ap.add_argument("--readme", default="README.md", help="whose results block to rewrite ('' for none)")
    args = ap.parse_args(argv)
    readme = Path(args.readme) if args.readme else None
    print(f"wrote {build(Path(args.out), Path(args.studies), Path(args.results), readme)}"
          + (f" and the results block of {readme}" if readme else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
