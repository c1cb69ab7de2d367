"""The project's decoding loop against transformers' ``generate`` on the tiny LLaMA.

Every greedy or sampled answer runs :mod:`minigpt4.models.decoding` in place of transformers'
``generate``; for the same context embeddings and settings both must choose the same tokens
(left-padded batches, repetition penalty, suppressed ids, end-of-sequence), stream exactly the
tokens they return and bar end-of-sequence below the minimum length.
"""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaForCausalLM

from minigpt4.models import decoding
from minigpt4.models.generation import GenerationSettings, StopRule, generate, left_pad
from tests.model_fixtures import REPO_ROOT

LLAMA = REPO_ROOT / "tests" / "fixtures" / "reference" / "tiny" / "llama"
EOS, PAD = 2, 0


@pytest.fixture(scope="module")
def llm():
    return LlamaForCausalLM.from_pretrained(LLAMA, local_files_only=True).eval()


def contexts(llm, lengths, seed=0):
    """Context embeddings made of the LLM's own token embeddings (what a prompt looks like)."""
    generator = torch.Generator().manual_seed(seed)
    table = llm.get_input_embeddings().weight.detach()
    return [
        table[torch.randint(3, table.shape[0], (n,), generator=generator)][None] for n in lengths
    ]


def ours(llm, ctx, on_token=None, vocab_size=None, **settings):
    rule = StopRule(end_ids=frozenset({EOS}))
    rows = [GenerationSettings(do_sample=False, **settings)] * len(ctx)
    with torch.no_grad():
        return generate(
            llm,
            ctx,
            rows,
            [rule] * len(ctx),
            decode=str,
            pad_token_id=PAD,
            on_token=on_token,
            vocab_size=vocab_size,
        )


def theirs(llm, ctx, **kwargs):
    """transformers' batched greedy generate on the same left-padded batch."""
    embeds, mask = left_pad(ctx)
    with torch.no_grad():
        out = llm.generate(
            inputs_embeds=embeds,
            attention_mask=mask,
            do_sample=False,
            pad_token_id=PAD,
            eos_token_id=EOS,
            **kwargs,
        )
    return out.tolist()


def assert_same(generations, expected):
    for got, row in zip(generations, expected):
        assert got.tokens == row[: len(got.tokens)]
        assert set(row[len(got.tokens) :]) <= {PAD}
        assert got.finish_reason == ("stop" if got.tokens[-1] == EOS else "length")


def test_left_padded_batch_chooses_transformers_tokens(llm):
    ctx = contexts(llm, [9], seed=10) + contexts(llm, [17, 13])  # the first row ends early
    got = ours(llm, ctx, max_new_tokens=24)
    assert_same(got, theirs(llm, ctx, max_new_tokens=24))
    assert [g.finish_reason for g in got] == ["stop", "length", "length"]
    assert len(got[0].tokens) < 24 == len(got[1].tokens)


def test_repetition_penalty_on_the_generated_tokens(llm):
    ctx = contexts(llm, [11], seed=1)
    plain = ours(llm, ctx, max_new_tokens=30)
    penalised = ours(llm, ctx, max_new_tokens=30, repetition_penalty=1.8)
    assert_same(penalised, theirs(llm, ctx, max_new_tokens=30, repetition_penalty=1.8))
    assert penalised[0].tokens != plain[0].tokens  # the penalty changed the answer


def test_suppressed_ids_are_never_chosen(llm):
    ctx = contexts(llm, [10, 6], seed=2)
    free = ours(llm, ctx, max_new_tokens=20)
    cut = min(max(g.tokens) for g in free)  # ids at or above this appear in every free row
    got = ours(llm, ctx, max_new_tokens=20, vocab_size=cut)
    assert all(max(g.tokens) < cut for g in got)
    rows = llm.get_output_embeddings().weight.shape[0]
    expected = theirs(llm, ctx, max_new_tokens=20, suppress_tokens=list(range(cut, rows)))
    assert_same(got, expected)


def test_streamed_tokens_are_the_returned_ones(llm):
    ctx = contexts(llm, [5, 12, 8], seed=3)
    streamed = {0: [], 1: [], 2: []}
    got = ours(llm, ctx, max_new_tokens=16, on_token=lambda row, t: streamed[row].append(t))
    assert [streamed[i] for i in range(3)] == [g.tokens for g in got]


def test_end_of_sequence_is_barred_below_each_rows_minimum_length():
    scores = torch.zeros(2, 6)
    scores[:, EOS] = 5.0
    rules = decoding.ScoreRules([1.0, 1.0], [3, 2], end_ids=[EOS], suppressed_from=5)
    early = rules(torch.ones(2, 2, dtype=torch.long), scores)
    assert early[0, EOS] == float("-inf") and early[1, EOS] == 5.0  # row 1 has its two
    assert early[:, 5].eq(float("-inf")).all() and early[:, 1].eq(0).all()
    late = rules(torch.ones(2, 3, dtype=torch.long), scores)
    assert late[:, EOS].eq(5.0).all()


def test_rows_with_their_own_penalty_and_minimum_length_answer_as_alone(llm):
    """One batch of rows that differ in repetition penalty and minimum length (counted with
    each row's own context) gives each row the tokens it gets alone."""
    ctx = contexts(llm, [9], seed=8) + contexts(llm, [11], seed=1) + contexts(llm, [14], seed=5)
    rows = [
        GenerationSettings(do_sample=False, max_new_tokens=12, min_length=9 + 12),
        GenerationSettings(do_sample=False, max_new_tokens=30, repetition_penalty=1.8),
        GenerationSettings(do_sample=False, max_new_tokens=20),
    ]
    rule = StopRule(end_ids=frozenset({EOS}))

    def run(ctx, rows):
        with torch.no_grad():
            return generate(llm, ctx, rows, [rule] * len(rows), decode=str, pad_token_id=PAD)

    together = run(ctx, rows)
    alone = [run([c], [r])[0] for c, r in zip(ctx, rows)]
    assert [g.tokens for g in together] == [g.tokens for g in alone]
    # alone and unbarred, that context ends at once (next test): here its minimum length holds
    assert len(together[0].tokens) == 12 and EOS not in together[0].tokens
    assert (
        together[1].tokens
        == ours(llm, ctx[1:2], max_new_tokens=30, repetition_penalty=1.8)[0].tokens
    )
    assert together[1].tokens != ours(llm, ctx[1:2], max_new_tokens=30)[0].tokens


def test_minimum_length_counts_the_context_as_transformers_does(llm):
    ctx = contexts(llm, [9], seed=8)  # its first token is end-of-sequence when not barred
    assert ours(llm, ctx, max_new_tokens=12)[0].tokens == [EOS]
    width = ctx[0].shape[1]
    got = ours(llm, ctx, max_new_tokens=12, min_length=width + 12)
    assert len(got[0].tokens) == 12 and EOS not in got[0].tokens
    assert_same(got, theirs(llm, ctx, max_new_tokens=12, min_length=width + 12))
