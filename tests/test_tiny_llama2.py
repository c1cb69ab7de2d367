"""The tiny LLaMA-2 MiniGPT-4 (``eval_configs/minigpt4_llama2_tiny_eval.yaml``): the original's
LLaMA-2 Chat variant (``arch: minigpt4``, no Q-Former, 4 neighbouring patch tokens per image
token, the ``[INST]`` template) in the tiny world.

The shipped model names colour and shape of held-out images (an untrained ``llama_proj`` does
not); the demo's Chat, the batch command, the server's OpenAI endpoint and ``python -m
minigpt4.evaluate`` run on it; the LLM's training sequences are what the model feeds its LLM;
the shipped files have the real layouts and the tokenizer is what its documented command makes.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import openai
import pytest
import torch
from omegaconf import OmegaConf

from minigpt4.conversation.templates import CONV_VISION_LLama2
from minigpt4.evaluate import main as evaluate_main
from minigpt4.inference import main as inference_main
from minigpt4.models.prompt import load_prompts
from tests import test_tiny_world_learns as learns
from tests.process_helpers import free_port, serving
from tests.serve_helpers import data_url, user_with_image
from tests.test_evaluate_cli import _make_synthetic
from tiny_world import build_tokenizer, build_vision_grouped, evaluate, llama2_layouts, text, world

REPO_ROOT = Path(__file__).resolve().parents[1]
EVAL_CONFIG = "eval_configs/minigpt4_llama2_tiny_eval.yaml"
STAGE1_CONFIG = "train_configs/minigpt4_llama2_tiny_stage1.yaml"
# Half the documented stage 1 (1500 iterations): a first LLM reached 0.895 after 750
# (docs/tiny-world.md), above TARGET, in half the time of the suite's slowest test.
STAGE1_ITERS = 750
STAGE2_CONFIG = "train_configs/minigpt4_llama2_tiny_stage2.yaml"
CHECKPOINT = REPO_ROOT / "tiny_world" / "checkpoint_llama2"
MODEL = "minigpt4-pretrained_minigpt4_llama2_tiny"  # <arch>-<checkpoint file name>
IMAGE_TOKENS = 16  # 112 px / patch 14 = 64 patch tokens, grouped by 4
HELD_OUT = 50
FOLLOW_UP = "What colour is the shape?"
# docs/tiny-world.md: the shipped model gets colour + shape right on 0.925 of 200 held-out images
# (0.94 of these 50); an untrained llama_proj on 0.010
TARGET = 0.8
COLOUR_MIN = 0.9


@pytest.fixture(scope="module")
def chat():
    torch.manual_seed(0)
    return evaluate.build_chat(EVAL_CONFIG)


def held_out_image(index: int, folder: Path) -> tuple[world.Scene, Path]:
    """Held-out sample ``index`` as the JPEG file a user would upload."""
    sample = world.make_sample(evaluate.HELD_OUT_SEED, index)
    path = folder / f"{index}.jpg"
    path.write_bytes(world.to_jpeg_bytes(sample.image))
    return sample.scene, path


def test_shipped_model_describes_unseen_images(chat):
    result = evaluate.evaluate_chat(chat, evaluate.HELD_OUT_SEED, HELD_OUT)
    assert result.accuracy >= TARGET, result.answers[:5]
    assert result.colour_accuracy >= COLOUR_MIN, result.answers[:5]
    assert all(len(r["answer"].split()) >= 5 for r in result.answers)  # descriptions


def test_untrained_projection_is_near_chance():
    torch.manual_seed(0)
    untrained = evaluate.build_chat(EVAL_CONFIG, untrained=True)
    result = evaluate.evaluate_chat(untrained, evaluate.HELD_OUT_SEED, HELD_OUT)
    assert result.accuracy <= 0.2, result.answers[:5]  # 24 colour x shape: chance ~0.04


def test_it_is_the_llama2_variant(chat):
    model = chat.model
    assert type(model).__name__ == "MiniGPT4Llama2" and not hasattr(model, "Qformer")
    assert chat.template.conversation is CONV_VISION_LLama2
    assert model.image_token_count == IMAGE_TOKENS
    # ln_vision is no file's: nn.LayerNorm's init, as the original's LLaMA-2 model builds it
    assert torch.equal(model.ln_vision.weight, torch.ones(64))
    assert torch.equal(model.ln_vision.bias, torch.zeros(64))
    shipped = torch.load(CHECKPOINT / "pretrained_minigpt4_llama2_tiny.pth")
    assert {k: tuple(v.shape) for k, v in shipped["model"].items()} == {
        "llama_proj.weight": (64, 4 * 64),
        "llama_proj.bias": (64,),
    }
    assert not any(report for report in model.load_report.values())  # every key was used
    embeds, _ = model.encode_img(torch.zeros(2, 3, 112, 112))
    assert embeds.shape == (2, IMAGE_TOKENS, 64)


def test_demo_chat_describes_then_answers_a_follow_up(chat, tmp_path):
    """Ten uploads in the demo's Chat: "Describe this image.", then "What colour is the
    shape?" in the same conversation (docs: 1.00 of 100 follow-ups right)."""
    described = coloured = 0
    for index in range(10):
        scene, path = held_out_image(index, tmp_path)
        conv, img_list = chat.new_conversation(), []
        chat.upload_img(str(path), conv, img_list)
        chat.encode_img(img_list)
        chat.ask(text.DEMO_QUESTION, conv)
        first, _ = chat.answer(conv, img_list, max_new_tokens=60, do_sample=False)
        chat.ask(FOLLOW_UP, conv)
        second, _ = chat.answer(conv, img_list, max_new_tokens=20, do_sample=False)
        described += world.scene_matches(scene, first)
        coloured += world.parse_answer(second)["colour"] == scene.colour
        prompt = conv.get_prompt()
        assert prompt.startswith(CONV_VISION_LLama2.system + "<s>[INST] <Img><ImageHere></Img> ")
        assert prompt.endswith(f" [/INST] {first}<s>[INST] {FOLLOW_UP} [/INST] {second}")
        # the LLM was trained on these very prompts (tiny_world.llama2_layouts)
        turns = [(text.DEMO_QUESTION, first), (FOLLOW_UP, None)]
        assert llama2_layouts.chat_prompt(turns) + second == prompt  # the chat added the answer
    assert described >= 8 and coloured >= 9, (described, coloured)


def test_batch_command(tmp_path):
    (tmp_path / "images").mkdir()
    scenes = [held_out_image(i, tmp_path / "images")[0] for i in range(4)]
    out = tmp_path / "answers.jsonl"
    argv = ["--cfg-path", EVAL_CONFIG, "--images", str(tmp_path / "images"), "--device", "cpu"]
    inference_main([*argv, "--prompt", text.DEMO_QUESTION, "--out", str(out), "--greedy"])
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [Path(r["image"]).name for r in records] == [f"{i}.jpg" for i in range(4)]
    right = sum(world.scene_matches(s, r["answer"]) for s, r in zip(scenes, records))
    assert right >= 3, records


def test_server_answers_through_the_openai_endpoint(tmp_path):
    port = free_port()
    cmd = [sys.executable, "-m", "minigpt4.serve", "--cfg-path", EVAL_CONFIG, "--device", "cpu"]
    base = f"http://127.0.0.1:{port}"
    scene, path = held_out_image(0, tmp_path)
    with serving([*cmd, "--port", str(port)], f"{base}/health", tmp_path / "serve.log"):
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
        assert [m.id for m in client.models.list()] == [MODEL]
        response = client.chat.completions.create(
            model=MODEL,
            messages=[
                user_with_image(data_url(path.read_bytes(), "image/jpeg"), text.DEMO_QUESTION)
            ],
            temperature=0,
            max_tokens=evaluate.MAX_NEW_TOKENS,
        )
    answer = response.choices[0].message.content
    assert world.scene_matches(scene, answer), (scene, answer)
    assert response.choices[0].finish_reason == "stop"  # the LLM's </s> ended it
    assert response.usage.prompt_tokens > IMAGE_TOKENS


def test_evaluator_runs_mme_on_it(tmp_path):
    data = tmp_path / "mme"
    _make_synthetic().write_mme(str(data), evaluate.HELD_OUT_SEED, 4)
    argv = ["--cfg-path", EVAL_CONFIG, "--benchmark", "mme", "--data", str(data)]
    argv += ["--out", str(tmp_path / "mme.json"), "--device", "cpu", "--no-progress"]
    results = evaluate_main(argv)
    assert results["config"]["model"]["arch"] == "minigpt4"
    assert len(results["items"]) == 5 * 4 * 2
    assert all(item["prediction"] for item in results["items"])
    assert set(results["scores"]["categories"]) == set(world.YES_NO_ATTRIBUTES)


@pytest.fixture()
def end_sym(chat):
    """Sets the model's ``end_sym`` for a stage's rows; restores the eval config's after."""
    saved = chat.model.end_sym

    def use(value: str) -> None:
        chat.model.end_sym = value

    yield use
    chat.model.end_sym = saved


def test_llm_training_sequences_are_what_the_model_feeds_it(chat, end_sym):
    """Each layout's ids, outside the slot, are the ids the LLaMA-2 model builds: the stage-1
    and stage-2 training rows (``prepare_llm_inputs``: same embeddings, the model's targets
    among the sequence's) and the chat's prompt segments."""
    model = chat.model
    tok = model.llama_tokenizer
    maker = llama2_layouts.Llama2SequenceMaker(tok, IMAGE_TOKENS, 0.5)
    stage2 = OmegaConf.load(REPO_ROOT / STAGE2_CONFIG).model
    stage2_prompts = load_prompts(stage2.prompt_path, stage2.prompt_template)
    assert stage2.end_sym == llama2_layouts.END_SYM
    rng = random.Random(0)
    for layout in llama2_layouts.LAYOUTS:
        for _ in range(4):
            scene = world.sample_scene(rng)
            slot = maker.slot(scene, rng)
            prompt, answer = maker.texts(layout, scene, rng)
            ids, labels = maker.encode(layout, prompt, answer, slot)
            start = next(i for i, lab in enumerate(labels) if lab != -100) - IMAGE_TOKENS
            assert ids[start : start + IMAGE_TOKENS] == slot
            if layout == "demo":
                before, after = model.segment_ids(prompt)
                assert ids == before + slot + after + tok.encode(answer)
                assert ids[-1] == tok.eos_token_id  # the chat's answer ends at </s>
                continue
            if layout == "stage2":  # one of the stage-2 config's training prompts
                assert prompt in stage2_prompts
            end = llama2_layouts.END_SYM if layout == "stage2" else text.STAGE1_END_SYM
            end_sym(end)
            samples = {"image": torch.rand(1, 3, 112, 112), "text_input": [answer[: -len(end)]]}
            with torch.no_grad():
                inputs = model.prepare_llm_inputs(samples, prompt=prompt)
            got = inputs["inputs_embeds"][0]
            assert got.shape[0] == len(ids)
            outside = [i for i in range(len(ids)) if not start <= i < start + IMAGE_TOKENS]
            with torch.no_grad():
                expected = model.embed_tokens(torch.tensor(ids))
            assert torch.equal(got[outside], expected[outside])
            targets = inputs["labels"][0]
            for i in (targets != -100).nonzero().flatten().tolist():
                assert labels[i] == ids[i] == targets[i]


def test_tokenizer_is_what_the_documented_command_makes(tmp_path):
    """``build_tokenizer --template llama2`` (docs/tiny-world.md) remakes the shipped
    tokenizer byte for byte; the template's pieces are a few each, as in LLaMA-2's."""
    build_tokenizer.main(["--template", "llama2", "--out", str(tmp_path)])
    for name in ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"):
        assert (tmp_path / name).read_bytes() == (CHECKPOINT / "llama" / name).read_bytes()
    tok = llama2_layouts.load_tokenizer(str(CHECKPOINT / "llama"))
    pieces = [tok.sp.id_to_piece(i) for i in tok.encode("<s>[INST] hi [/INST] ")]
    assert pieces[:4] == ["<s>", "▁[", "INST", "]"]
    assert pieces[-4:] == ["▁[/", "INST", "]", "▁"]
    assert tok.pad_token_id == tok.unk_token_id == 0  # "$$" is no piece: the unknown id


def test_train_llm_has_no_yes_no_recipe_for_llama2(capsys):
    from tiny_world import train_llm

    with pytest.raises(SystemExit):
        train_llm.parse_args(["--template", "llama2", "--drill-warmup", "250"])
    assert "--template llama2 has no yes/no layouts" in capsys.readouterr().err


@pytest.mark.slow
def test_stages_with_torchrun_learn_from_a_fresh_projection(tmp_path):
    """Stage 1 (the v1 stage-1 shards) from the shipped frozen parts and a fresh llama_proj,
    then stage 2 from its checkpoint on a description-only cc_sbu_align folder."""
    make_synthetic = learns._make_synthetic()
    shards = tmp_path / "shards"
    make_synthetic.write_webdataset(
        str(shards), seed=learns.STAGE1_SEED, count=learns.STAGE1_COUNT, shard_size=500
    )
    storage = f"datasets.laion.build_info.storage={shards}/{{00000..00003}}.tar"
    stage1_options = [storage, f"run.iters_per_epoch={STAGE1_ITERS}"]
    learns._torchrun(STAGE1_CONFIG, [*stage1_options, f"run.output_dir={tmp_path / 'stage1'}"])
    stage1 = learns._checkpoint(tmp_path / "stage1")
    align = tmp_path / "align"
    make_synthetic.write_align(str(align), seed=learns.STAGE2_SEED, count=learns.STAGE2_COUNT)
    options = [f"model.ckpt={stage1}", f"datasets.cc_sbu_align.build_info.storage={align}"]
    learns._torchrun(STAGE2_CONFIG, [*options, f"run.output_dir={tmp_path / 'stage2'}"])
    torch.manual_seed(0)
    trained = evaluate.build_chat(
        EVAL_CONFIG, [f"model.ckpt={learns._checkpoint(tmp_path / 'stage2')}"]
    )
    result = evaluate.evaluate_chat(trained, evaluate.HELD_OUT_SEED, 200)
    assert result.accuracy >= TARGET, (result.accuracy, result.answers[:5])
    assert result.colour_accuracy >= COLOUR_MIN, (result.colour_accuracy, result.answers[:5])


def test_vision_files_have_the_variants_layout(chat, tmp_path):
    """The shipped ViT is a flat ``eva_vit_g.pth`` that loads strictly, at the eval config's
    sizes, and what it was pre-trained to give is what the model feeds ``llama_proj``;
    ``build_vision_grouped`` writes such files (two steps here)."""
    sizes = json.loads((CHECKPOINT / "vision_sizes.json").read_text())
    vit = OmegaConf.load(REPO_ROOT / EVAL_CONFIG).model.vit_config
    assert (sizes["image_size"], sizes["patch_size"], sizes["vit_embed_dim"]) == (
        vit.img_size,
        vit.patch_size,
        vit.embed_dim,
    )
    assert all(
        not k.startswith(("ln_vision", "model")) for k in torch.load(CHECKPOINT / "eva_vit_g.pth")
    )
    shipped = build_vision_grouped.load(
        build_vision_grouped.GroupedSizes(**sizes), CHECKPOINT / "eva_vit_g.pth"
    )
    images = torch.rand(2, 3, 112, 112)
    with torch.no_grad():
        groups, _ = shipped.forward_with_features(images)
        model = chat.model
        fed = model.image_adapter.features(model, model.ln_vision(model.visual_encoder(images)))
    assert groups.shape == (2, IMAGE_TOKENS, 4 * 64)
    assert torch.allclose(fed, groups, atol=1e-5)
    flags = ["--out", str(tmp_path), "--steps", "2", "--train-count", "8", "--val-count", "4"]
    build_vision_grouped.main([*flags, "--eval-every", "1"])
    built = json.loads((tmp_path / "vision_sizes.json").read_text())
    assert built == sizes
    build_vision_grouped.load(
        build_vision_grouped.GroupedSizes(**built), tmp_path / "eva_vit_g.pth"
    )
