"""Run by the lmms-eval environment's Python (tests/test_lmms_eval.py): the same predictions
scored by lmms-eval's own MME and POPE functions and by ours, printed as one JSON object."""

from __future__ import annotations

import json
import random
from pathlib import Path

from lmms_eval.tasks.mme import utils as lmms_mme
from lmms_eval.tasks.pope import utils as lmms_pope

from minigpt4.evaluation import mme, pope
from minigpt4.evaluation.items import Item

# Answers both parsers read alike (lmms-eval lower-cases, strips and drops "." first).
MME_ANSWERS = ("Yes", "No", "yes.", "No, it is not.", "Yes, there is.", "Maybe", "nothing")
POPE_ANSWERS = ("yes", "no", "Yes", "No", " no ")


def mme_case(rng: random.Random) -> dict:
    categories = list(mme.PERCEPTION + mme.COGNITION)
    items, preds = [], []
    for category in categories:
        for image in range(rng.randint(1, 6)):
            for k, truth in enumerate(("Yes", "No")):
                name = f"{image}.png"
                items.append(Item(f"{category}/{name}/{k}", category, name, Path(name), "?", truth))
                preds.append(rng.choice(MME_ANSWERS))
    ours = mme.score(items, preds)
    docs = [{"question_id": f"{i.category}/{i.image}", "category": i.category, "answer": i.answer}
            for i in items]  # fmt: skip
    processed = [lmms_mme.mme_process_results(d, [p]) for d, p in zip(docs, preds)]
    theirs = {
        key: lmms_mme.mme_aggregate_results([r[key] for r in processed if key in r])
        for key in ("mme_perception_score", "mme_cognition_score")
    }
    return {"ours": {"perception": ours["perception"], "cognition": ours["cognition"]},
            "theirs": {"perception": theirs["mme_perception_score"],
                       "cognition": theirs["mme_cognition_score"]}}  # fmt: skip


def pope_case(rng: random.Random) -> dict:
    labels = [rng.choice(("yes", "no")) for _ in range(200)]
    preds = [rng.choice(POPE_ANSWERS) for _ in labels]
    items = [
        Item(str(n), "random", "x.jpg", Path("x.jpg"), "?", lab) for n, lab in enumerate(labels)
    ]
    ours = pope.score(items, preds)
    docs = [{"question_id": str(n), "answer": lab} for n, lab in enumerate(labels)]
    processed = [lmms_pope.pope_process_results(d, [p]) for d, p in zip(docs, preds)]

    def agg(name: str) -> float:
        return getattr(lmms_pope, f"pope_aggregate_{name}")([r[f"pope_{name}"] for r in processed])

    theirs = {k: agg(k) for k in ("accuracy", "precision", "recall", "f1_score", "yes_ratio")}
    return {"ours": ours, "theirs": theirs, "label_yes_share": labels.count("yes") / len(labels)}


def main() -> None:
    rng = random.Random(15)
    print(json.dumps({"mme": [mme_case(rng) for _ in range(5)], "pope": pope_case(rng)}))


if __name__ == "__main__":
    main()
