"""The report's sections for Optuna sweeps: from the committed records (results/sweeps/<name>.json), never the
database. Each sweep file that states a hypothesis gets a section, run or not; each record gets one too.

Optuna draws the optimisation history and the parameter importances (fANOVA, seeded) from the record rebuilt as an
in-memory study (sweeps.record.to_study), so a fresh clone draws the same figures.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import optuna
import pandas as pd
from optuna.trial import TrialState
from optuna.visualization.matplotlib import plot_optimization_history

from sweeps.record import load_record, study_about, to_study
from sweeps.search import Study, SweepError
from sweeps.studyfile import search_files

from .stats import fmt, mean_ci

_OBJECTIVE_LABELS = {"val_points/miou": "val-click mIoU (mean of seeds)"}
_PARAM_LABELS = {"points.n_per_class": "clicks per class", "loss.gamma": "focal γ", "semi.weight": "unlabelled weight"}


MIN_TRIALS_FOR_IMPORTANCE = 5


def importances(s: optuna.Study) -> dict[str, float] | None:
    """fANOVA importances of the objective over the complete trials (seeded); None with fewer than
    MIN_TRIALS_FOR_IMPORTANCE of them (a forest over 2 or 3 points ranks nothing)."""
    if sum(t.state == TrialState.COMPLETE for t in s.trials) < MIN_TRIALS_FOR_IMPORTANCE:
        return None
    ev = optuna.importance.FanovaImportanceEvaluator(seed=0)
    return optuna.importance.get_param_importances(s, evaluator=ev)


def _figures(s: optuna.Study, imp: dict[str, float] | None, name: str, objective: str, out: Path,
             png: dict) -> list[str]:
    """Optuna's optimisation history, and the fANOVA importances as a bar chart. Optuna's matplotlib plots set a
    global style; the rc_context keeps it from leaking into the report's other figures."""
    import seaborn as sns

    target = _OBJECTIVE_LABELS.get(objective, objective)
    names = [f"sweep-{name}-history.png"]
    with matplotlib.rc_context(), warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        ax = plot_optimization_history(s, target_name=target)
        ax.set_title(f"{name}: each complete trial and the best so far")
        # below the axes: inside, it hid a trial
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, fontsize="small", frameon=False)
        ax.figure.set_size_inches(6.4, 3.6)
        ax.figure.savefig(out / names[0], **png)
        plt.close(ax.figure)
    if imp:
        fig, ax = plt.subplots(figsize=(5.6, 0.5 + 0.55 * len(imp)))
        sns.barplot(x=list(imp.values()), y=[_PARAM_LABELS.get(k, k) for k in imp], color="C0", ax=ax)
        ax.bar_label(ax.containers[0], fmt="%.2f", padding=3)
        ax.set(xlim=(0, 1), xlabel=f"share of the variance of {target} each parameter explains", ylabel="",
               title=f"{name}: parameter importances (fANOVA, its forest seeded)")
        names.append(f"sweep-{name}-importances.png")
        fig.savefig(out / names[-1], **png)
        plt.close(fig)
    return names


def _trial_table(rec: dict, s: optuna.Study, top: int = 8) -> list[str]:
    params = list(rec["space"])
    done = sorted((t for t in s.trials if t.state == TrialState.COMPLETE), key=lambda t: -t.value)[:top]
    head = ["trial", *(_PARAM_LABELS.get(p, p) for p in params), f"{rec['objective']} (mean of seeds)",
            "test mIoU (t 95 % CI over seeds)", "seeds"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t in done:
        runs = t.user_attrs.get("runs") or []
        test = mean_ci([r.get("test/miou") for r in runs])
        vals = [_param(t.params[p]) for p in params]
        rows.append(f"| {t.number} | " + " | ".join(vals) + f" | {t.value:.3f} | {fmt(*test)} | {len(runs)} |")
    return rows


def _param(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _pruned_lines(rec: dict, s: optuna.Study) -> list[str]:
    """Which trials the pruner stopped, where, and at what value: what the table of complete trials leaves out."""
    pruned = [t for t in s.trials if t.state == TrialState.PRUNED and t.intermediate_values]
    if not pruned:
        return []
    items = []
    for t in pruned:
        epoch = max(t.intermediate_values)
        params = ", ".join(f"{_PARAM_LABELS.get(p, p)} {_param(t.params[p])}" for p in rec["space"])
        items.append(f"{t.number} ({params}; epoch {epoch}, {t.intermediate_values[epoch]:.3f})")
    return [f"Pruned, with the epoch each stopped at and its first seed's `{rec['objective']}` there (the pruner stops "
            "a trial whose best value so far is below the median of the earlier trials at the same epoch): "
            + "; ".join(items) + ".", ""]


def early_rank_agreement(s: optuna.Study) -> tuple[int, int, float] | None:
    """How well the first epoch the pruner may act on ranks the complete trials: (that epoch, the number of
    trials, Spearman's ρ between the first seed's value there and the trial's value). None below 3 trials."""
    done = [t for t in s.trials if t.state == TrialState.COMPLETE and t.intermediate_values]
    if len(done) < 3:
        return None
    first = min(min(t.intermediate_values) for t in done)
    pairs = [(t.intermediate_values[first], t.value) for t in done if first in t.intermediate_values]
    early, final = pd.Series([p[0] for p in pairs]).rank(), pd.Series([p[1] for p in pairs]).rank()
    return first, len(pairs), float(early.corr(final))


def _early_line(s: optuna.Study, objective: str) -> list[str]:
    agree = early_rank_agreement(s)
    if agree is None:
        return []
    epoch, n, rho = agree
    return [f"How well epoch {epoch} foretells the end: over the {n} complete trials, the first seed's `{objective}` "
            f"at epoch {epoch} against the trial's value (the mean of its seeds at the end) has Spearman's ρ = "
            f"{rho:+.2f} (1: the same order; near 0 or below: a trial pruned there may have ended among the best).", ""]


def sweep_section(rec: dict | None, study: Study | None, out: Path, png: dict) -> list[str]:
    """One sweep's section: question, hypothesis, process, then (when it ran) the trials, figures and verdict."""
    # what ran says the question, hypothesis and process (the record); the verdict, written after, comes from the file
    src = rec or study_about(study)
    name, file = src["name"], (study.path if study else src.get("file"))  # the command that runs it now
    verdict = study.verdict if study else src.get("verdict")
    md = [f"## Sweep: {name}", ""]
    if src.get("question"):
        md += [f"**Question.** {src['question']}", ""]
    if src.get("hypothesis"):
        md += [f"**Hypothesis** (written before the trials). {src['hypothesis']}", ""]
    space = "; ".join(f"{_PARAM_LABELS.get(k, k)} (`{k}`) {v.get('low')}–{v.get('high')}"
                      f"{' (log)' if v.get('log') else ''}"
                      if "low" in v else f"`{k}` ∈ {v.get('choices')}" for k, v in src["space"].items())
    sampler = (f"multivariate TPE (seed {src['seed']}; the first {src['startup_trials']} trials drawn at random)"
               if src["sampler"] == "tpe" and src.get("startup_trials") else
               f"{src['sampler'].upper() if src['sampler'] == 'tpe' else src['sampler']} (seed {src['seed']})")
    from_epoch = (f", from epoch {src.get('prune_from_epoch', Study.prune_from_epoch)}" if src["pruner"] == "median"
                  else "")
    md += [f"**Process.** `make sweep STUDY={file}`: Optuna {sampler}, pruner {src['pruner']} (on the first seed's "
           f"per-epoch `{src['objective']}`" + from_epoch + "), "
           f"{src['budget']} trials of {src['seeds_per_config']} seeds each; a trial's value is the mean of its seeds' "
           f"`{src['objective']}` (the val tile's clicks, never its dense mask); base `{src['base_config']}`"
           + (f" with {', '.join(f'`{o}`' for o in src['overrides'])}" if src["overrides"] else "")
           + f"; space: {space}.", ""]
    if rec is None:
        return md + [f"Not run yet: no record `results/sweeps/{name}.json`. Run `make sweep STUDY={file}`.", ""]
    s = to_study(rec)
    ended = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    states = {st: sum(t.state == st for t in s.trials) for st in ended}
    # a worker stopped with its session leaves its trial failed; the same parameters come back in a later trial
    # that resumes the runs, so such a failure lost nothing and is counted apart from a real one
    # (over every recorded trial: a retry still waiting or running counts too)
    later = lambda t: any(u["number"] > t.number and u["params"] == t.params for u in rec["trials"])  # noqa: E731
    retried = sum(t.state == TrialState.FAIL and later(t) for t in s.trials)
    failed = states[TrialState.FAIL] - retried
    md += [f"Trials recorded: **{states[TrialState.COMPLETE]} complete, {states[TrialState.PRUNED]} pruned, "
           f"{failed} failed** of a budget of {rec['budget']}"
           + (f"; {retried} more stopped with their worker and were retried, the retry resuming their runs" if retried
              else "") + ".", ""]
    if not states[TrialState.COMPLETE]:
        return md + ["No complete trial yet.", ""]
    md += ["**Results** (the best complete trials by the objective; test mIoU is a diagnostic, not what TPE saw).", "",
           *_trial_table(rec, s), "", *_pruned_lines(rec, s),
           *_early_line(s, rec["objective"])]
    imp = importances(s)
    if imp:
        md += ["Parameter importances (fANOVA over the complete trials, seed 0): "
               + ", ".join(f"{_PARAM_LABELS.get(k, k)} {v:.2f}" for k, v in imp.items())
               + f". With {states[TrialState.COMPLETE]} trials they rank the parameters; they do not measure effects "
               "(the factor studies do that, paired by seed).", ""]
    else:
        md += [f"Parameter importances: not computed before {MIN_TRIALS_FOR_IMPORTANCE} trials are complete.", ""]
    md += [f"![{name}]({f})" for f in _figures(s, imp, name, rec["objective"], out, png)] + [""]
    md += ["**Verdict.** " + (verdict.strip() if verdict else "pending: not written yet."), ""]
    return md


def sweep_sections(out: Path, root: Path = Path("results"), studies_dir: Path = Path("experiments/studies"),
                   png: dict | None = None) -> list[str]:
    """A section per study file with a search and a hypothesis, and per record (a record's own text wins: it is
    what ran)."""
    files = {}
    for p in search_files(studies_dir):
        try:
            st = Study.load(p)
        except SweepError:
            continue  # a sweep file that cannot load is make sweep's error to report, not the report's
        if st.hypothesis:
            files[st.name] = st
    records = {p.stem: load_record(p) for p in sorted((root / "sweeps").glob("*.json"))}
    md = []
    for name in sorted(set(files) | set(records)):
        md += sweep_section(records.get(name), files.get(name), out, png or {})
    return md
