"""The GPT's cached inference path agrees with its training path."""

from __future__ import annotations

import pytest
import torch

from trainer.model import GPT, GPTConfig

CONFIG = GPTConfig(vocab_size=97, context_length=32, n_layer=2, n_head=2, n_embd=32)


@pytest.fixture
def model() -> GPT:
    torch.manual_seed(0)
    return GPT(CONFIG).eval()


def test_forward_shapes_loss_and_tied_embeddings(model: GPT) -> None:
    idx = torch.randint(0, CONFIG.vocab_size, (3, 10))
    logits, loss = model(idx, idx)
    assert logits.shape == (3, 10, CONFIG.vocab_size)
    assert loss is not None
    assert loss.item() == pytest.approx(torch.log(torch.tensor(97.0)).item(), rel=0.1)
    assert model.lm_head.weight.data_ptr() == model.wte.weight.data_ptr()
    with pytest.raises(ValueError, match="exceeds the context"):
        model(torch.zeros(1, 33, dtype=torch.long))


@torch.no_grad()
def test_prefill_then_cached_decode_equals_a_full_forward(model: GPT) -> None:
    idx = torch.randint(0, CONFIG.vocab_size, (2, 12))
    full, _ = model(idx)
    prompt = idx[:, :8]
    ones = torch.ones_like(prompt)
    logits, cache = model.forward_with_cache(
        prompt, ones, torch.arange(8).expand(2, 8), model.empty_cache(2)
    )
    steps = [logits]
    for t in range(8, 12):
        mask = torch.ones(2, t + 1, dtype=torch.long)
        step, cache = model.forward_with_cache(
            idx[:, t : t + 1], mask, torch.full((2, 1), t), cache
        )
        steps.append(step)
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)
    assert cache[0][0].shape == (2, CONFIG.n_head, 12, CONFIG.n_embd // CONFIG.n_head)


@torch.no_grad()
def test_a_left_padded_batch_equals_each_sequence_alone(model: GPT) -> None:
    short = torch.randint(0, CONFIG.vocab_size, (1, 5))
    long = torch.randint(0, CONFIG.vocab_size, (1, 9))
    ids = torch.cat([torch.cat([torch.zeros(1, 4, dtype=torch.long), short], 1), long])
    mask = torch.tensor([[0] * 4 + [1] * 5, [1] * 9])
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    logits, cache = model.forward_with_cache(ids, mask, positions, model.empty_cache(2))
    alone_short, _ = model(short)
    alone_long, _ = model(long)
    assert torch.allclose(logits[0, 4:], alone_short[0], atol=1e-5)
    assert torch.allclose(logits[1], alone_long[0], atol=1e-5)
    assert not torch.isnan(logits).any()
    # One decode step for both rows continues each sequence correctly.
    nxt = torch.randint(0, CONFIG.vocab_size, (2, 1))
    step, _ = model.forward_with_cache(
        nxt,
        torch.cat([mask, torch.ones(2, 1, dtype=torch.long)], 1),
        torch.tensor([[5], [9]]),
        cache,
    )
    ref_short, _ = model(torch.cat([short, nxt[:1]], 1))
    assert torch.allclose(step[0, 0], ref_short[0, -1], atol=1e-5)


@torch.no_grad()
def test_padding_stays_finite_in_half_precision(model: GPT) -> None:
    half = GPT(CONFIG).half().eval()
    half.load_state_dict(model.state_dict())
    ids = torch.tensor([[0, 0, 5, 6], [1, 2, 3, 4]])
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    logits, _ = half.forward_with_cache(
        ids, mask, (mask.cumsum(1) - 1).clamp(min=0), half.empty_cache(2)
    )
    assert not torch.isnan(logits).any()
