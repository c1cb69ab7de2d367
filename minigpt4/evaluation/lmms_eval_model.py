"""MiniGPT-4 as an lmms-eval model, so lmms-eval runs its own tasks on our checkpoints:

    lmms-eval --model minigpt4 --model_args cfg_path=eval_configs/minigpt4_eval.yaml \\
        --tasks mme,pope --batch_size 8

``model_args``: ``cfg_path`` (an eval config, as for demo.py), ``device`` (cpu or cuda),
``gpu_id``, ``options`` (config overrides as for ``--options``, separated by ";", e.g.
``options=model.ckpt=/ckpt.pth;model.low_resource=False``). Each request is asked as the demo
asks it, in a fresh conversation about its (first) image, through the same batched call as
``python -m minigpt4.evaluate``. One process (no data parallelism); ``generate_until`` only.
"""

from __future__ import annotations

import json
from typing import Any

from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from tqdm import tqdm

from minigpt4.conversation.loading import load_chat
from minigpt4.evaluation.ask import answer_batch

DEFAULT_MAX_NEW_TOKENS = 64
IMAGE_TOKEN = "<image>"  # some tasks mark the image in the text; MiniGPT-4's prompt has its own


def generation_settings(gen_kwargs: dict[str, Any]) -> dict[str, Any]:
    """lmms-eval's generation kwargs as our settings: greedy unless the task samples."""
    sample = bool(gen_kwargs.get("do_sample", False)) and (gen_kwargs.get("temperature") or 0) > 0
    settings: dict[str, Any] = {
        "max_new_tokens": int(gen_kwargs.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS)),
        "num_beams": int(gen_kwargs.get("num_beams", 1)),
        "do_sample": sample,
    }
    if sample:
        settings["temperature"] = float(gen_kwargs["temperature"])
        if gen_kwargs.get("top_p"):
            settings["top_p"] = float(gen_kwargs["top_p"])
    return settings


class MiniGPT4(lmms):
    is_simple = True

    def __init__(
        self,
        cfg_path: str,
        device: str | None = None,
        gpu_id: int = 0,
        options: str = "",
        batch_size: int | str = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        if kwargs:
            raise TypeError(
                f"minigpt4: unknown model_args {sorted(kwargs)}; known: cfg_path, device, gpu_id, "
                "options, batch_size"
            )
        overrides = [o.strip() for o in str(options).split(";") if o.strip()]
        self.chat = load_chat(cfg_path, device, overrides, int(gpu_id))
        self.batch_size_per_gpu = int(batch_size)

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    def _image(self, request: Instance) -> Any:
        _, _, doc_to_visual, doc_id, task, split = request.args
        visuals = doc_to_visual(self.task_dict[task][split][doc_id])
        if not visuals:
            raise ValueError(f"minigpt4: {task} document {doc_id} has no image")
        return visuals[0].convert("RGB")

    def generate_until(self, requests: list[Instance]) -> list[str]:
        """Answers in request order; requests with equal generation kwargs are batched."""
        groups: dict[str, list[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault(json.dumps(request.args[1], sort_keys=True, default=str), []).append(
                index
            )
        answers: list[str] = [""] * len(requests)
        bar = tqdm(total=len(requests), desc="MiniGPT-4 answering")
        for indices in groups.values():
            gen_kwargs = dict(requests[indices[0]].args[1])
            until = gen_kwargs.pop("until", None) or []
            until = [until] if isinstance(until, str) else list(until)
            settings = generation_settings(gen_kwargs)
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                images = [self._image(requests[i]) for i in chunk]
                questions = [requests[i].args[0].replace(IMAGE_TOKEN, "").strip() for i in chunk]
                # lmms-eval's "until": the model stops there and leaves it out of the answer.
                texts = answer_batch(self.chat, images, questions, settings, stop=until)
                for i, text in zip(chunk, texts):
                    answers[i] = text
                bar.update(len(chunk))
        bar.close()
        return answers

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        raise NotImplementedError(
            "minigpt4: loglikelihood tasks are not supported; use generate_until tasks "
            "(MME, POPE, VQAv2, ...)"
        )

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise NotImplementedError(
            "minigpt4: multi-round tasks are not supported (each question is asked in a fresh "
            "conversation)"
        )
