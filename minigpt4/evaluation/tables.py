"""The printed summary of each benchmark's scores (plain text, one row per category)."""

from __future__ import annotations

from typing import Any

from minigpt4.evaluation import mme


def _rows(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
        for r in [header, *rows]
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def mme_table(scores: dict[str, Any]) -> str:
    rows = [
        [
            name,
            f"{c['acc']:.2f}",
            f"{c['acc_plus']:.2f}",
            f"{c['score']:.2f}",
            f"{100 * c['other_rate']:.1f}%",
            str(c["images"]),
        ]
        for name, c in scores["categories"].items()
    ]
    rows.append(
        [
            "all",
            f"{scores['acc']:.2f}",
            f"{scores['acc_plus']:.2f}",
            f"{scores['total']:.2f}",
            f"{100 * scores['other_rate']:.1f}%",
            str(sum(c["images"] for c in scores["categories"].values())),
        ]
    )
    text = _rows(["category", "acc", "acc+", "score", "other", "images"], rows)
    text += f"\nperception {scores['perception']:.2f}  cognition {scores['cognition']:.2f}"
    official = len(mme.PERCEPTION + mme.COGNITION)
    if 0 < official - len(scores["missing_categories"]) < official:
        text += f"  (official categories absent: {', '.join(scores['missing_categories'])})"
    return text


def pope_table(scores: dict[str, Any]) -> str:
    keys = ["accuracy", "precision", "recall", "f1", "yes_ratio"]
    cats = dict(scores["categories"])
    if len(cats) > 1:
        cats["all"] = scores
    rows = [[name, *(f"{m[k]:.4f}" for k in keys), str(m["questions"])] for name, m in cats.items()]
    return _rows(["file", *keys, "questions"], rows)


def vqa_table(scores: dict[str, Any]) -> str:
    rows = [[f"answer type: {k}", f"{v:.2f}"] for k, v in sorted(scores["perAnswerType"].items())]
    rows.append(["overall", f"{scores['overall']:.2f}"])
    return _rows(["VQA accuracy", "%"], rows)


def accuracy_table(scores: dict[str, Any]) -> str:
    """The MiniGPT-v2 benchmarks: accuracy in %, per split file when there are several."""
    rows = [
        [name, f"{100 * split['accuracy']:.2f}", str(split["items"])]
        for name, split in scores.get("splits", {}).items()
    ]
    if len(rows) != 1:
        rows.append(["all", f"{100 * scores['accuracy']:.2f}", str(scores["items"])])
    return _rows(["split", "accuracy %", "items"], rows)
