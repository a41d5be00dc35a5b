"""The training engine's parts, each against an independent statement of what it must do."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from titok_cli.config import generator_config_from_dict, read_config_file, replace
from titok_cli.errors import CheckpointError
from titok_cli.models.generator import TiTokGenerator
from titok_cli.training import checkpoint as ck
from titok_cli.training.data import EpochSampler
from titok_cli.training.ema import EMA
from titok_cli.training.generator_objective import MaskGITObjective, draw_step, loss_sums, model_inputs, weights_of
from titok_cli.training.loop import adamw, decays, param_names
from titok_cli.training.schedule import WarmupCosine

from .conftest import GOLDEN


def tiny_cfg(**changes):
    cfg = generator_config_from_dict(read_config_file(GOLDEN / "gen_vit_tiny" / "config.json"))
    return replace(cfg, **changes)


# -- schedule ------------------------------------------------------------------------------------


def test_warmup_then_cosine_to_end_lr():
    s = WarmupCosine(base_lr=1e-3, total_steps=110, warmup_steps=10, end_lr=1e-5)
    assert s(0) == 0.0  # the official LambdaLR starts at 0
    assert s(5) == pytest.approx(5e-4)
    assert s(10) == pytest.approx(1e-3)
    assert s(60) == pytest.approx(1e-5 + (1e-3 - 1e-5) * 0.5)  # half way down the cosine
    assert s(110) == pytest.approx(1e-5)
    lrs = [s(i) for i in range(10, 111)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    assert s.apply(opt, 5) == opt.param_groups[0]["lr"] == pytest.approx(5e-4)


# -- EMA -----------------------------------------------------------------------------------------


def test_ema_follows_the_official_decay_ramp():
    model = torch.nn.Linear(3, 2)
    ema = EMA(model, max_decay=0.999)
    assert [ema.decay(n) for n in (1, 2, 3)] == [0.0, pytest.approx(2 / 11), pytest.approx(3 / 12)]
    assert ema.decay(100_000) == 0.999
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)  # first update: decay 0, a copy
    assert torch.equal(ema.shadow["weight"], model.weight)
    before = ema.shadow["weight"].clone()
    with torch.no_grad():
        model.weight.fill_(3.0)
    ema.update(model)
    assert torch.allclose(ema.shadow["weight"], before * (2 / 11) + 3.0 * (9 / 11))
    target = torch.nn.Linear(3, 2)
    ema.copy_to(target)
    assert torch.equal(target.weight, ema.shadow["weight"])


# -- the objective -------------------------------------------------------------------------------


def test_masks_follow_the_arccos_schedule_and_depend_only_on_seed_and_step():
    k = 8
    d = draw_step(seed=1, step=3, global_batch=4096, num_tokens=k, class_dropout=0.1)
    counts = d.masks.sum(1)
    assert counts.min() >= 1 and counts.max() <= k
    # E[round(K * arccos(t) / (pi/2))] for t ~ U(0,1): arccos(t)/(pi/2) has mean 2/pi
    assert counts.float().mean().item() == pytest.approx(k * 2 / math.pi, abs=0.15)
    assert d.drop_class.float().mean().item() == pytest.approx(0.1, abs=0.02)
    again = draw_step(seed=1, step=3, global_batch=4096, num_tokens=k, class_dropout=0.1)
    assert torch.equal(d.masks, again.masks) and torch.equal(d.drop_class, again.drop_class)
    other = draw_step(seed=1, step=4, global_batch=4096, num_tokens=k, class_dropout=0.1)
    assert not torch.equal(d.masks, other.masks)


def test_inputs_use_the_mask_id_and_the_official_condition_tokens():
    cfg = tiny_cfg()
    tokens = torch.arange(16).view(2, 8)
    d = draw_step(0, 0, 2, 8, 0.0)
    d.drop_class[1] = True
    masked, cond = model_inputs(tokens, torch.tensor([3, 4]), d, cfg)
    assert torch.equal(masked[d.masks], torch.full_like(masked[d.masks], cfg.codebook_size))
    assert torch.equal(masked[~d.masks], tokens[~d.masks])
    assert cond.tolist() == [cfg.codebook_size + 1 + 3, cfg.drop_label_id]


def test_loss_weights_masked_positions_and_counts_masked_hits_only():
    torch.manual_seed(0)
    logits = torch.randn(3, 8, 256)
    targets = torch.randint(0, 256, (3, 8))
    masks = torch.rand(3, 8) < 0.5
    masks[:, 0] = True
    obj = MaskGITObjective(label_smoothing=0.1, unmasked_weight=0.0)
    total, hits, count = loss_sums(logits, targets, masks, obj)
    ce = torch.nn.functional.cross_entropy(logits[masks], targets[masks], label_smoothing=0.1, reduction="sum")
    assert total.item() == pytest.approx(ce.item(), rel=1e-5)
    assert count.item() == masks.sum().item()
    assert hits.item() == (logits.argmax(-1)[masks] == targets[masks]).sum().item()
    assert weights_of(masks, 0.1)[~masks].unique().tolist() == [pytest.approx(0.1)]


def test_dropout_is_active_in_train_mode_only_and_adds_no_state():
    cfg = tiny_cfg()
    torch.manual_seed(0)
    model = TiTokGenerator.from_config(cfg)
    plain = TiTokGenerator.from_config(replace(cfg, dropout=0.0, attn_drop=0.0))
    assert list(model.state_dict()) == list(plain.state_dict())
    ids = torch.randint(0, 256, (2, 8))
    cond = torch.tensor([257, 258])
    model.train()
    a, b = model(ids, cond), model(ids, cond)
    assert not torch.allclose(a, b) and a.requires_grad
    model.eval()
    assert torch.equal(model.logits(ids, torch.tensor([0, 1])), model.logits(ids, torch.tensor([0, 1])))


def test_weight_decay_groups_follow_the_official_rule():
    model = TiTokGenerator.from_config(tiny_cfg())
    assert decays("model.encoder.layer.0.attention.self.query.weight", torch.zeros(2, 2))
    assert not decays("model.embeddings.word_embeddings.weight", torch.zeros(2, 2))
    assert not decays("model.lm_head.bias", torch.zeros(2))
    opt = adamw(model, 1e-3, (0.9, 0.96), 0.03)
    names = param_names(model)
    no_decay = {names[id(p)] for p in opt.param_groups[0]["params"]}
    assert "model.embeddings.position_embeddings.weight" in no_decay
    assert "model.lm_head.weight" in {names[id(p)] for p in opt.param_groups[1]["params"]}
    assert opt.param_groups[1]["weight_decay"] == 0.03 and opt.defaults["betas"] == (0.9, 0.96)


# -- the sampler ---------------------------------------------------------------------------------


def test_sampler_visits_every_row_once_per_epoch_and_restarts_anywhere():
    s = EpochSampler(num_rows=10, global_batch=4, seed=7)
    stream = np.concatenate([s.global_batch_indices(i) for i in range(10)])  # 40 positions = 4 epochs
    for e in range(4):
        assert sorted(stream[e * 10 : (e + 1) * 10]) == list(range(10))
    assert not np.array_equal(stream[:10], stream[10:20])  # reshuffled per epoch
    fresh = EpochSampler(num_rows=10, global_batch=4, seed=7)
    assert np.array_equal(fresh.global_batch_indices(7), s.global_batch_indices(7))  # no hidden state
    batch = s.global_batch_indices(3)
    shards = [batch[EpochSampler.shard(batch, r, 2)] for r in range(2)]
    assert np.array_equal(np.concatenate(shards), batch)
    assert not np.array_equal(EpochSampler(10, 4, 8).global_batch_indices(0), s.global_batch_indices(0))


# -- checkpoints ---------------------------------------------------------------------------------


def test_checkpoint_round_trip_restores_optimizer_and_rng(tmp_path: Path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    opt = adamw(model, 1e-2, (0.9, 0.96), 0.03)
    names = param_names(model)
    model(torch.randn(3, 4)).sum().backward()
    opt.step()
    tensors, meta = ck.optimizer_state(opt, names)
    rng_t, rng_m = ck.rng_state()
    state = {**{f"model.{k}": v for k, v in model.state_dict().items()}, **{f"optim.{k}": v for k, v in tensors.items()},
             **{f"rng.0.{k}": v for k, v in rng_t.items()}}  # fmt: skip
    expected = (torch.rand(3), np.random.rand(), random.random())
    for step in (1, 2, 3):
        ck.write_checkpoint(tmp_path, ck.Checkpoint(step, state, {"optimizer": meta, "rng": [rng_m]}), keep=2)
    assert [s for s, _ in ck.list_checkpoints(tmp_path)] == [2, 3]
    assert sorted(p.name for p in tmp_path.iterdir()) == [ck.checkpoint_name(2), ck.checkpoint_name(3)]

    back = ck.latest_checkpoint(tmp_path)
    assert back.step == 3
    ck.set_rng_state(back.group("rng.0"), back.meta["rng"][0])
    assert torch.equal(torch.rand(3), expected[0]) and np.random.rand() == expected[1]
    assert random.random() == expected[2]
    model2 = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    model2.load_state_dict(back.group("model"))
    opt2 = adamw(model2, 1e-2, (0.9, 0.96), 0.03)
    ck.load_optimizer_state(opt2, param_names(model2), back.group("optim"), back.meta["optimizer"])
    for p1, p2 in zip(model.parameters(), model2.parameters()):
        assert torch.equal(opt.state[p1]["exp_avg_sq"], opt2.state[p2]["exp_avg_sq"])
    assert opt2.param_groups[1]["weight_decay"] == 0.03


def test_a_damaged_checkpoint_is_a_clear_error(tmp_path: Path):
    path = ck.write_checkpoint(tmp_path, ck.Checkpoint(5, {"model.w": torch.ones(2)}, {}))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable training checkpoint"):
        ck.read_checkpoint(path)
    from safetensors.torch import save_file

    plain = tmp_path / ck.checkpoint_name(6)
    save_file({"w": torch.ones(1)}, str(plain))
    with pytest.raises(CheckpointError, match="not a titok training checkpoint"):
        ck.latest_checkpoint(tmp_path)
