"""Aggressive training's two stopping rules against a transcription of He et al.'s code, on scripted numbers.

The oracle is `text.py` of He et al. 2019's code (jxhe/vae-lagging-encoder), transcribed below with
their variable names. Inner loop, before each decoder step:

    sub_iter = 1; burn_pre_loss = 1e4; burn_cur_loss = 0; burn_num_words = 0
    while aggressive_flag and sub_iter < 100:
        burn_num_words += (burn_sents_len - 1) * burn_batch_size      # the batch's targets
        loss = vae.loss(batch_data_enc, kl_weight)                     # (B,) per sentence
        burn_cur_loss += loss.sum().item(); ...; enc_optimizer.step()
        batch_data_enc = train_data_batch[random id]                   # first step: the current batch
        if sub_iter % 15 == 0:
            burn_cur_loss = burn_cur_loss / burn_num_words
            if burn_pre_loss - burn_cur_loss < 0: break
            burn_pre_loss = burn_cur_loss; burn_cur_loss = burn_num_words = 0
        sub_iter += 1

Outer rule, once per epoch while the flag is on (pre_mi = 0 at the start):

    cur_mi = calc_mi(vae, val_data_batch)
    if cur_mi - pre_mi < 0: aggressive_flag = False      # "STOP BURNING"
    pre_mi = cur_mi

The method's real `_inner_loop` and `end_epoch` are driven with scripted losses and MIs (a stand-in
trainer whose batches carry their scripted loss), and their decisions compared with the oracle's.
"""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from textsvae.methods.aggressive import Aggressive, AggressiveParams
from textsvae.methods.base import StepOutput


# -- the oracle ------------------------------------------------------------------------------------------
def he_inner_steps(script: list[tuple], check: int = 15, bound: int = 100) -> int:
    """Encoder steps He et al.'s loop takes on scripted (loss summed over the batch's sentences, targets, ...)."""
    sub_iter, burn_pre_loss, burn_cur_loss, burn_num_words, taken = 1, 1e4, 0.0, 0, 0
    steps = iter(script)
    while sub_iter < bound:
        loss_sum, words = next(steps)[:2]
        burn_num_words += words
        burn_cur_loss += loss_sum
        taken += 1
        if sub_iter % check == 0:
            burn_cur_loss = burn_cur_loss / burn_num_words
            if burn_pre_loss - burn_cur_loss < 0:
                break
            burn_pre_loss = burn_cur_loss
            burn_cur_loss = burn_num_words = 0
        sub_iter += 1
    return taken


def he_phase(mis: list[float]) -> list[bool]:
    """aggressive_flag after each epoch's validation MI, by He et al.'s rule."""
    flag, pre_mi, out = True, 0.0, []
    for cur_mi in mis:
        if flag:
            if cur_mi - pre_mi < 0:
                flag = False
            pre_mi = cur_mi
        out.append(flag)
    return out


# -- the method, driven by a script -----------------------------------------------------------------------
@dataclass
class ScriptedBatch:
    sentences: int
    n_targets: int
    loss_sum: float                      # sum over the batch's sentences of the per-sentence loss

    def __len__(self) -> int:
        return self.sentences


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = torch.nn.Linear(2, 2)
        self.decoder = torch.nn.Linear(2, 2)


class ScriptedTrainer:
    """What `_inner_loop` uses of a trainer; `random_train_batch` hands out the scripted batches in order."""

    def __init__(self, batches: list[ScriptedBatch]):
        self.model = Model()
        self.batches = list(batches)
        self.drawn = 0

    def random_train_batch(self, generator):
        assert isinstance(generator, torch.Generator)
        self.drawn += 1
        return self.batches.pop(0)

    def clip_and_step(self, optimizer, params=None):
        optimizer.step()


def run_inner_loop(script: list[tuple], max_inner: int, check_every: int, sentences: int = 4):
    """Encoder steps the method's inner loop takes on scripted batches: (loss summed over the batch's
    sentences, targets[, sentences]) per step."""
    batches = [ScriptedBatch(step[2] if len(step) > 2 else sentences, step[1], step[0]) for step in script]
    trainer = ScriptedTrainer(batches[1:])
    m = Aggressive(AggressiveParams(max_inner=max_inner, check_every=check_every))
    m.enc_opt = torch.optim.SGD(trainer.model.encoder.parameters(), lr=0.0)
    m.dec_opt = torch.optim.SGD(trainer.model.decoder.parameters(), lr=0.0)
    seen = []

    def loss(model, batch, beta):
        seen.append((batch, beta))
        weight = model.encoder.weight.sum() * 0.0                         # something to back-propagate
        per_sentence = torch.full((len(batch),), batch.loss_sum / len(batch))
        return StepOutput(per_sentence.mean() + weight, per_sentence, torch.zeros(len(batch)))

    m.loss = loss
    steps = m._inner_loop(trainer, batches[0], 0.37)
    assert [b for b, _ in seen] == batches[:steps]                        # the current batch first, then drawn ones
    assert trainer.drawn == steps - 1 and {beta for _, beta in seen} == {0.37}   # at the step's KL weight
    return steps


def blocks(per_word: list[float], size: int, words: int = 10) -> list[tuple[float, int]]:
    """A script of len(per_word) blocks of `size` steps, each step at that block's loss per word."""
    return [(value * words, words) for value in per_word for _ in range(size)]


INNER_CASES = {
    # block losses per word; He et al. break at the first block whose loss exceeds the previous block's
    "rises at block 3": (blocks([5.0, 4.0, 4.5, 1.0], 3), 3),
    "equal is no rise": (blocks([5.0, 5.0, 5.0, 6.0, 1.0], 3), 3),
    "a check compares with the last block only": (blocks([5.0, 3.0, 4.0, 1.0], 3), 3),   # (5+3+4)/3 = (5+3)/2
    "falls to the bound": (blocks([9.0, 8.0, 7.0, 6.0], 3), 3),
    "only at checks": ([(50.0, 10), (90.0, 10), (10.0, 10)] + [(40.0, 10), (95.0, 10), (10.0, 10)]
                       + blocks([9.0], 3), 3),                                   # steps rise inside a block
    # loss per word is the block's total over its total targets, not the mean of the steps' rates:
    # block 1 = 110 / 60 = 1.83 (rates 1 and 2), block 2 = 60 / 40 = 1.5 (rates 3 and 1): a fall for He et
    # al., a rise (1.5 -> 2) for the mean of rates; block 3 = 100 / 50 = 2 rises
    "weighted by targets": ([(10.0, 10), (100.0, 50), (30.0, 10), (30.0, 30), (100.0, 50), (0.0, 1)]
                            + blocks([1.0], 2), 2),
    "He et al.'s 15": (blocks([3.0, 2.0, 2.5, 1.0], 15), 15),
    # a rise of 0.02 nats per word: smaller than one nat spread over the block's 30 targets
    "a small rise": (blocks([5.0, 5.02, 9.0], 3), 3),
    # block totals 20 and 20 over 40 targets each (equal: no rise), though the last steps' targets differ
    "over all the block's targets": ([(10.0, 10), (10.0, 30), (10.0, 30), (10.0, 10)] + blocks([9.0], 2), 2),
    # per word 1.0 then 0.5 (a fall), though the block's total loss rises from 20 to 30
    "loss per word, not in total": ([(10.0, 10), (10.0, 10), (30.0, 50), (0.0, 10)] + blocks([9.0], 2), 2),
    # batches of 4 and 1 sentences: the batch loss is the mean over sentences, so each batch counts by its
    # sum; per word 50 / 20 = 2.5, then 40 / 20 = 2 (a fall), then a rise
    "sentences per batch": ([(40.0, 10, 4), (10.0, 10, 1), (20.0, 10, 1), (20.0, 10, 4)]
                            + [(x * 10, 10, 2) for x in (9.0, 9.0)], 2),
}


@pytest.mark.parametrize("name", INNER_CASES)
def test_inner_loop_stops_where_he_et_als_loop_stops(name):
    """Each script ends in a break before the bound, so both loops stop by the loss rule; the bound is
    exercised by a script long enough to reach it ('falls to the bound': 12 steps, bound 10)."""
    script, check = INNER_CASES[name]
    max_inner = 10 if name == "falls to the bound" else len(script)
    expected = he_inner_steps(script, check, bound=max_inner + 1)   # their `sub_iter < bound`: bound - 1 steps
    assert run_inner_loop(script, max_inner, check) == expected
    assert {"rises at block 3": 9, "equal is no rise": 12, "a check compares with the last block only": 9,
            "falls to the bound": 10, "only at checks": 9, "weighted by targets": 6,
            "He et al.'s 15": 45, "a small rise": 6, "over all the block's targets": 6,
            "loss per word, not in total": 6, "sentences per batch": 6}[name] == expected   # by hand


def test_inner_loop_steps_at_most_max_inner_and_at_least_one():
    assert run_inner_loop(blocks([1.0], 20), max_inner=7, check_every=3) == 7
    assert run_inner_loop(blocks([1.0], 5), max_inner=1, check_every=3) == 1
    assert run_inner_loop(blocks([2.0, 3.0], 1), max_inner=5, check_every=1) == 2   # checked after every step


def test_default_bound_is_he_et_als_99_steps():
    """He et al.'s `while sub_iter < 100` from sub_iter = 1 takes at most 99 encoder steps; so does the default."""
    script = blocks([9.0 - 0.01 * i for i in range(8)], 15)                         # never rises: 120 steps
    defaults = AggressiveParams()
    assert run_inner_loop(script, defaults.max_inner, defaults.check_every) == he_inner_steps(script) == 99


# -- the outer rule -------------------------------------------------------------------------------------------
def run_phase(mis: list[float]) -> list[bool]:
    m = Aggressive()
    out = []
    for mi in mis:
        m.end_epoch(None, {"mi": mi, "loss": 1.0})
        out.append(m.aggressive)
        assert m.state_dict()["aggressive"] is m.aggressive
    return out


@pytest.mark.parametrize("mis", [[0.5, 0.8, 0.7, 2.0], [0.1, 0.2, 0.3, 0.4], [0.3, 0.1, 0.5], [1.0, 2.0, 1.999],
                                 [0.2, 0.0]])
def test_phase_ends_when_validation_mi_falls(mis):
    """He et al.: the aggressive phase ends after the first epoch whose validation MI is below the
    previous epoch's, and never resumes."""
    assert run_phase(mis) == he_phase(mis)


@pytest.mark.parametrize("mis", [[-0.01, 0.5, 0.6], [0.5, 0.5, 0.6]], ids=["negative first MI", "unchanged MI"])
def test_phase_rule_at_the_edges_is_he_et_als(mis):
    """He et al. start from pre_mi = 0 and stop only on a fall (cur_mi - pre_mi < 0): a first MI below 0 ends
    the phase, an unchanged one does not."""
    assert run_phase(mis) == he_phase(mis)


def test_a_validation_without_mi_ends_the_phase():
    """No MI to compare (the LM has none): it cannot have risen, so the phase ends."""
    m = Aggressive()
    m.end_epoch(None, {"loss": 1.0})
    assert m.aggressive is False


# -- the method's state ---------------------------------------------------------------------------------------------
class LRTrainer(ScriptedTrainer):
    def __init__(self, lr: float):
        super().__init__([])
        self.state = type("State", (), {"lr": lr})()

    def make_optimizer(self, params, lr):
        return torch.optim.Adam(params, lr=lr)


def test_saved_optimiser_states_are_reused_only_at_the_lr_they_were_saved_with():
    """A checkpoint's Adam moments are loaded when the LR is unchanged; after a halving (He et al. rebuild
    both optimisers at the new LR) they are not, and the new LR holds."""
    trainer = LRTrainer(0.01)
    m = Aggressive()
    m._optimizers(trainer)
    for p in trainer.model.parameters():
        p.grad = torch.ones_like(p)
    m.enc_opt.step()
    m.dec_opt.step()
    state = m.state_dict()
    same = Aggressive()
    same.load_state_dict(state)
    same._optimizers(trainer)
    assert len(same.enc_opt.state_dict()["state"]) == 2                    # weight and bias moments
    halved = Aggressive()
    halved.load_state_dict(state)
    trainer.state.lr = 0.005
    halved._optimizers(trainer)
    assert halved.enc_opt.state_dict()["state"] == {} and halved.dec_opt.state_dict()["state"] == {}
    assert halved.enc_opt.param_groups[0]["lr"] == halved.dec_opt.param_groups[0]["lr"] == 0.005


def test_a_checkpoint_without_the_inner_step_count_loads_as_zero():
    m = Aggressive()
    m.last_inner_steps = 7
    m.load_state_dict({"aggressive": True, "pre_mi": 0.5})                 # an older checkpoint's keys
    assert (m.aggressive, m.pre_mi, m.last_inner_steps) == (True, 0.5, 0)


def test_the_fresh_minibatches_come_from_the_run_seed():
    """setup() seeds the generator of the fresh minibatches with the run seed + 7919 (a stream apart from the
    data order's), so a run, and its resumption, draws the same batches."""
    from textsvae.core.config import preset_config

    ctx = type("Ctx", (), {})()
    ctx.model = type("M", (), {"is_lm": False})()
    ctx.config = preset_config("tiny")
    m = Aggressive()
    m.setup(ctx)
    expected = torch.Generator().manual_seed(ctx.config.train.seed + 7919)
    assert torch.equal(m.generator.get_state(), expected.get_state())
