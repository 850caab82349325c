"""The bench rows as a Markdown table: shared by `make bench` and the report, which must not import torch and timm
(the bench's imports) only to print a table."""

from __future__ import annotations


def markdown_table(rows: list[dict]) -> str:
    """The bench rows as a Markdown table (also the report's speed section)."""
    out = ["| measurement | ours | reference | ratio | goal | met |", "|---|---|---|---|---|---|"]
    for x in rows:
        ratio = "—" if x["ratio"] is None else f"{x['ratio']:.3f}"
        met = "—" if x["met"] is None else ("yes" if x["met"] else "no")
        out.append(f"| {x['what']} | {x['a']:.3f} {x['unit']} | {x['b']:.3f} {x['unit']} | {ratio} | {x['goal']} | {met} |")
    return "\n".join(out)
