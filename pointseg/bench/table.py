"""The bench rows as a Markdown table: shared by `make bench` and the report, which must not import torch and timm
(the bench's imports) only to print a table."""

from __future__ import annotations


def markdown_table(rows: list[dict]) -> str:
    """The bench rows as a Markdown table (also the report's speed section). Rows of one file may come from runs
    on different CPUs (`make bench --parts …` keeps the other parts' rows): then each row names its CPU, since a
    ratio is only read against rows timed on the same one."""
    cpus = {x.get("cpu") for x in rows}
    per_row = len(cpus) > 1
    out = ["| measurement | ours | reference | ratio | goal | met |" + (" timed on |" if per_row else ""),
           "|---|---|---|---|---|---|" + ("---|" if per_row else "")]
    for x in rows:
        ratio = "—" if x["ratio"] is None else f"{x['ratio']:.3f}"
        met = "—" if x["met"] is None else ("yes" if x["met"] else "no")
        cpu = f" {short_cpu(x.get('cpu'))} |" if per_row else ""
        out.append(f"| {x['what']} | {x['a']:.3f} {x['unit']} | {x['b']:.3f} {x['unit']} | {ratio} | {x['goal']} | "
                   f"{met} |{cpu}")
    return "\n".join(out)


def short_cpu(label: str | None) -> str:
    """'Intel(R) Xeon(R) Processor (AVX512)' → 'Intel Xeon (AVX512)'; a row that did not record its CPU →
    'not recorded'."""
    if not label:
        return "not recorded"
    return " ".join(label.replace("(R)", "").replace("(TM)", "").replace(" Processor", "").split())
