"""The tools that make the tiny world's frozen parts, and the shipped files they made."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from tiny_world import build_tokenizer, build_vision, export_ckpt, parts, text, world

REPO_ROOT = Path(__file__).resolve().parents[1]
SHIPPED = REPO_ROOT / "tiny_world" / "checkpoint"
KEYS = REPO_ROOT / "tests" / "fixtures" / "keys"


def test_shipped_tokenizer_is_what_the_documented_command_makes(tmp_path):
    build_tokenizer.main(["--out", str(tmp_path)])
    assert (tmp_path / "tokenizer.model").read_bytes() == (
        SHIPPED / "llama" / "tokenizer.model"
    ).read_bytes()


def test_shipped_tokenizer_is_llama_like():
    tok = AutoTokenizer.from_pretrained(SHIPPED / "llama", local_files_only=True)
    assert (tok.unk_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    assert tok("a red circle").input_ids[0] == 1  # BOS added, no EOS
    assert tok("a red circle").input_ids[-1] != 2
    ids = tok("###", add_special_tokens=False).input_ids
    assert tok.convert_ids_to_tokens(ids) == ["###"]
    for word in world.COLOURS + world.SHAPES:
        assert len(tok(word, add_special_tokens=False).input_ids) == 1, word
    # Byte fallback: text outside the world still round-trips.
    assert tok.decode(tok("Zoë 42 ✓", add_special_tokens=False).input_ids) == "Zoë 42 ✓"


def test_slot_sequences_have_minigpt4_layout():
    from tiny_world.train_llm import IGNORE, SequenceMaker

    tok = AutoTokenizer.from_pretrained(SHIPPED / "llama", local_files_only=True)
    maker = SequenceMaker(tok, 32)
    import random

    rng = random.Random(0)
    scene = world.Scene("red", "circle", "large", "top left", "gray")
    ids, labels = maker.make("demo", scene, rng)
    system = tok(text.CONV_SYSTEM + "###Human: <Img>").input_ids  # BOS + system + <Img>
    assert ids[: len(system)] == system
    slot = ids[len(system) : len(system) + 32]
    allowed = {i for v in maker.attribute_pieces.values() for p in v.values() for i in p}
    assert set(slot) <= allowed
    assert all(label == IGNORE for label in labels[: len(system) + 32])
    tail = tok.decode(ids[len(system) + 32 :])
    assert tail.startswith("</Img>") and tail.endswith("###")
    ids1, labels1 = maker.make("stage1", scene, rng)
    assert ids1[0] == 1 and tok.decode(ids1[33:]).endswith("\n")
    assert "red" in tok.decode(ids1[33:]) and "circle" in tok.decode(ids1[33:])


def test_vision_files_have_the_real_layout_and_load_strictly(tmp_path):
    sizes = parts.VisionSizes(vit_embed_dim=16, vit_depth=1, qformer_hidden_size=16)
    vision = parts.TinyVision(sizes).eval()
    vit_path, blip2_path = parts.save_vision(vision, tmp_path)
    vit = torch.load(vit_path)
    real_vit = {
        line.split()[0].split("\t")[0]
        for line in (KEYS / "eva_vit_g_keys.txt").read_text().splitlines()
        if line.strip()
    }
    depth_free = {k for k in real_vit if not k.startswith("blocks.") or k.startswith("blocks.0.")}
    assert set(vit) == depth_free
    blip2 = torch.load(blip2_path)["model"]
    assert {"query_tokens", "ln_vision.weight", "ln_vision.bias"} <= set(blip2)
    assert all(k.startswith(("Qformer.bert.", "query_tokens", "ln_vision.")) for k in blip2)
    again = parts.load_vision(sizes, vit_path, blip2_path)
    image = torch.randn(2, 3, sizes.image_size, sizes.image_size)
    torch.testing.assert_close(again(image), vision(image))


def test_shipped_vision_matches_its_sizes_and_the_eval_config():
    from omegaconf import OmegaConf

    sizes = json.loads((SHIPPED / "vision_sizes.json").read_text())
    cfg = OmegaConf.load(REPO_ROOT / "eval_configs" / "minigpt4_tiny_eval.yaml").model
    assert cfg.image_size == sizes["image_size"] == cfg.vit_config.img_size
    assert cfg.vit_config.embed_dim == sizes["vit_embed_dim"]
    assert cfg.vit_config.depth == sizes["vit_depth"]
    assert cfg.qformer_config.hidden_size == sizes["qformer_hidden_size"]
    assert cfg.qformer_config.num_hidden_layers == sizes["qformer_num_hidden_layers"]
    assert cfg.num_query_token == sizes["num_query_token"]
    vision = parts.load_vision(
        parts.VisionSizes(**sizes),
        SHIPPED / "eva_vit_g.pth",
        SHIPPED / "blip2_pretrained_flant5xxl.pth",
    )
    out = vision(torch.zeros(1, 3, sizes["image_size"], sizes["image_size"]))
    assert out.shape == (1, sizes["num_query_token"], sizes["qformer_hidden_size"])


def test_patch_labels_find_the_shape():
    sample = world.make_sample(3, 0)
    x = build_vision.eval_transform(112)(sample.image)[None]
    labels = build_vision.patch_labels(x, [sample.scene], [sample.style.background_rgb], 14)[0]
    on_shape = labels != len(world.SHAPES)
    assert 1 <= int(on_shape.sum()) <= 20
    assert set(labels[on_shape].tolist()) == {world.SHAPES.index(sample.scene.shape)}


def test_export_keeps_only_llama_proj(tmp_path):
    runner_ckpt = {
        "model": {
            "llama_proj.weight": torch.randn(4, 3),
            "llama_proj.bias": torch.randn(4),
            "Qformer.bert.embeddings.position_ids": torch.arange(5)[None],
        },
        "optimizer": {},
        "epoch": 0,
    }
    torch.save(runner_ckpt, tmp_path / "c.pth")
    export_ckpt.export(tmp_path / "c.pth", tmp_path / "out.pth")
    out = torch.load(tmp_path / "out.pth")
    assert set(out) == {"model"}
    assert set(out["model"]) == {"llama_proj.weight", "llama_proj.bias"}
    torch.testing.assert_close(
        out["model"]["llama_proj.bias"], runner_ckpt["model"]["llama_proj.bias"]
    )
    with pytest.raises(ValueError, match="llama_proj"):
        torch.save({"model": {"other": torch.zeros(1)}}, tmp_path / "bad.pth")
        export_ckpt.export(tmp_path / "bad.pth", tmp_path / "x.pth")


def test_yes_no_sequences_and_their_decisions():
    import random

    from tiny_world.train_llm import IGNORE, SequenceMaker, decision_mask, pad

    tok = AutoTokenizer.from_pretrained(SHIPPED / "llama", local_files_only=True)
    maker = SequenceMaker(tok, 32)
    rng = random.Random(0)
    scene = world.Scene("red", "circle", "large", "top left", "gray")
    system = tok(text.CONV_SYSTEM + "###Human: <Img>").input_ids
    seqs = [maker.make("yesno", scene, rng) for _ in range(20)]
    seqs += [maker.make("drill", scene, rng) for _ in range(5)]
    ids, labels, _ = pad(seqs, tok.eos_token_id)
    decisions = decision_mask(maker, ids, labels)
    for row, (i, lab) in enumerate(seqs[:20]):
        assert i[: len(system)] == system and all(x == IGNORE for x in lab[: len(system) + 32])
        tail = tok.decode(i[len(system) + 32 :])
        assert tail.startswith("</Img> Is ") and tail.endswith(("Yes###", "No###"))
        # every answer is one decision, right after "Assistant:", and is the truth
        answers = [part.split("###")[0] for part in tail.split("###Assistant: ")[1:]]
        assert int(decisions[row].sum()) == len(answers) >= 1
        questions = [q.split("###")[0] for q in tail.split("Is ")[1:]]
        for question, answer in zip(questions, answers):
            true = any(world.yes_no_question(a, getattr(scene, a)) == "Is " + question.split(
                " Please")[0] for a in world.YES_NO_ATTRIBUTES)  # fmt: skip
            assert answer == (world.YES if true else world.NO), (question, answer)
    # a drill: "value Yes/No" items after the slot, each answer a decision
    drill = tok.decode(seqs[20][0][33:])
    assert int(decisions[20].sum()) == drill.count("Yes") + drill.count("No") == 8


def test_train_llm_can_start_from_an_llm_folder():
    from safetensors.torch import load_file

    from tiny_world import train_llm

    folder = SHIPPED / "llama"
    args = train_llm.parse_args(["--init", str(folder), "--hidden", "32"])
    model = train_llm.build_model(AutoTokenizer.from_pretrained(folder), args)
    saved = load_file(folder / "model.safetensors")
    assert model.config.hidden_size == 64  # the folder's, not the flag's
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, saved[name]), name


def test_slot_mix_makes_convex_mixtures_of_the_slot_words_only_in_the_slot():
    from transformers import LlamaForCausalLM

    from tiny_world.train_llm import IGNORE, slot_embeddings

    model = LlamaForCausalLM.from_pretrained(SHIPPED / "llama", local_files_only=True)
    torch.manual_seed(0)
    ids = torch.randperm(200)[:50][None] + 3  # distinct tokens: their embeddings are independent
    labels = torch.full_like(ids, IGNORE)
    labels[0, 40:] = ids[0, 40:]  # the slot: the 32 positions before the first label
    words = model.get_input_embeddings()(ids)[0].detach()
    mixed = slot_embeddings(model, ids, labels, 32, noise=0.0, mix=1.0)[0].detach()
    assert torch.equal(mixed[:8], words[:8]) and torch.equal(mixed[40:], words[40:])
    assert not torch.allclose(mixed[8:40], words[8:40])
    # each slot embedding is sum_j w_j * word_j over the slot's words, w >= 0, sum w = 1
    weights = torch.linalg.lstsq(words[8:40].T, mixed[8:40].T).solution.T
    assert torch.allclose(weights @ words[8:40], mixed[8:40], atol=1e-5)
    assert torch.allclose(weights.sum(1), torch.ones(32), atol=1e-4)
    assert bool((weights > -1e-4).all())
    half = slot_embeddings(model, ids, labels, 32, noise=0.0, mix=0.5)[0].detach()
    assert not torch.allclose(half[8:40], words[8:40])


def test_slot_distract_adds_a_word_the_slot_does_not_have():
    import random

    from transformers import LlamaForCausalLM

    from tiny_world.train_llm import IGNORE, SequenceMaker, slot_embeddings

    tok = AutoTokenizer.from_pretrained(SHIPPED / "llama", local_files_only=True)
    model = LlamaForCausalLM.from_pretrained(SHIPPED / "llama", local_files_only=True)
    maker = SequenceMaker(tok, 32)
    pool = torch.tensor(maker.word_pieces)
    slot = maker.slot(world.Scene("red", "circle", "large", "top left", "gray"), random.Random(0))
    ids = torch.tensor([[1] * 4 + slot + [5] * 6])
    labels = torch.full_like(ids, IGNORE)
    labels[0, 36:] = 5
    table = model.get_input_embeddings().weight.detach()
    torch.manual_seed(0)
    out = slot_embeddings(model, ids, labels, 32, noise=0.0, distract=0.3, pool=pool)[0].detach()
    assert torch.equal(out[:4], table[ids[0, :4]]) and torch.equal(out[36:], table[ids[0, 36:]])
    added = (out[4:36] - table[ids[0, 4:36]]) / 0.3
    # each position got exactly one pool word's embedding, never one of the scene's
    nearest = torch.cdist(added, table[pool]).argmin(1)
    assert torch.allclose(added, table[pool][nearest], atol=1e-5)
    assert not set(pool[nearest].tolist()) & set(slot)
    assert len(set(nearest.tolist())) > 1


def test_follow_up_prob_sets_how_many_demo_conversations_go_on():
    import random

    from tiny_world.train_llm import SequenceMaker

    tok = AutoTokenizer.from_pretrained(SHIPPED / "llama", local_files_only=True)
    scene = world.Scene("red", "circle", "large", "top left", "gray")
    for prob, turns in ((0.0, 1), (1.0, 2)):
        maker = SequenceMaker(tok, 32, follow_up_prob=prob)
        rng = random.Random(0)
        for _ in range(10):
            ids, _ = maker.make("demo", scene, rng)
            assert tok.decode(ids[33:]).count("###Assistant:") == turns


def test_yes_no_conversation_length_and_described_start():
    import random

    from tiny_world.train_llm import SequenceMaker, decision_mask, pad

    tok = AutoTokenizer.from_pretrained(SHIPPED / "llama", local_files_only=True)
    scene = world.Scene("red", "circle", "large", "top left", "gray")
    start = len(tok(text.CONV_SYSTEM + "###Human: <Img>").input_ids) + 32  # after the slot

    def conversations(**kwargs) -> list[tuple[list, list]]:
        maker = SequenceMaker(tok, 32, **kwargs)
        rng = random.Random(0)
        return [maker.make("yesno", scene, rng) for _ in range(20)]

    default = conversations()
    # a share of 0 draws nothing: the sequences of runs without the flag stay the same
    assert conversations(described_prob=0.0) == default
    assert max(tok.decode(ids[start:]).count("###Assistant:") for ids, _ in default) > 1
    for ids, _ in conversations(yes_no_turns=1):
        assert tok.decode(ids[start:]).count("###Assistant:") == 1
    described = conversations(described_prob=1.0)
    maker = SequenceMaker(tok, 32)
    ids, labels, _ = pad(described, tok.eos_token_id)
    decisions = decision_mask(maker, ids, labels)
    for row, (i, _) in enumerate(described):
        tail = tok.decode(i[start:])
        assert tail.startswith(f"</Img> {text.DEMO_QUESTION}###Assistant: ")
        first = tail.split("###Assistant: ")[1].split("###")[0]
        assert world.scene_matches(scene, first) and " Is " in tail.split(first)[1]
        # the description is no decision: one per yes/no answer
        assert int(decisions[row].sum()) == tail.count("###Assistant:") - 1


@pytest.mark.parametrize(
    "flags", [["--yes-no-turns", "0"], ["--yes-no-described", "1.5"], ["--yes-no-described", "-1"]]
)
def test_train_llm_rejects_bad_yes_no_flags(flags, capsys):
    from tiny_world import train_llm

    with pytest.raises(SystemExit):
        train_llm.parse_args(flags)
    assert flags[0] in capsys.readouterr().err
