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
    return text + "\n" + mme_sums_line(scores)


def mme_sums_line(scores: dict[str, Any]) -> str:
    """MME's two sums, saying what each covers: a sum over categories the data lacks is no
    score (the tiny world has one perception category and no cognition one)."""
    categories = scores["categories"]
    parts = []
    for label, names in (("perception", mme.PERCEPTION), ("cognition", mme.COGNITION)):
        present = [c for c in names if c in categories]
        if not present:
            parts.append(f"{label}: none of its categories in the data")
        elif len(present) < len(names):
            covered = f"{len(present)} of its {len(names)} categories: {', '.join(present)}"
            parts.append(f"{label} {scores[label]:.2f} ({covered})")
        else:
            parts.append(f"{label} {scores[label]:.2f}")
    unofficial = [c for c in categories if c not in mme.PERCEPTION + mme.COGNITION]
    if unofficial:
        parts.append(f"not MME categories, in 'all' only: {', '.join(unofficial)}")
    return "; ".join(parts)


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
