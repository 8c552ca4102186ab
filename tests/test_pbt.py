"""Population Based Training: the toy of Jaderberg et al. 2017, explore, schedules, settings."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rung.algorithms import (
    PBT,
    AttemptFinished,
    CheckpointStored,
    CloneTrial,
    GridSearch,
    PromoteTrial,
    ResultReported,
    Space,
    WorkerJoined,
    choice,
    grid,
    loguniform,
    randint,
    step,
    uniform,
)
from rung.algorithms.benchmarks import ToyQuadratic
from rung.algorithms.explore import perturb
from rung.algorithms.pbt import best_schedule, lineage
from rung.algorithms.rng import derive_rng
from rung.algorithms.simulate import Simulator

TOY = ToyQuadratic(lr=0.05)
GRID_MEMBERS = [{"h0": 1.0, "h1": 0.0}, {"h0": 0.0, "h1": 1.0}]


@pytest.mark.parametrize("h", GRID_MEMBERS, ids=["h=(1,0)", "h=(0,1)"])
def test_toy_members_with_fixed_hyperparameters_end_at_0_39(h):
    # Each shrinks one coordinate of theta to 0 and keeps the other at 0.9: Q = 1.2 - 0.81 = 0.39
    # (to the last bit but one: 1.2 - 0.81 is 0.3899999999999999 in binary floating point).
    fixed = GridSearch({"h0": grid([h["h0"]]), "h1": grid([h["h1"]])}, budget=200, metric="Q", mode="max")
    result = Simulator(fixed, TOY, 1, report_every=4).run()
    assert result.state.trials[0].value == pytest.approx(0.39, abs=1e-12)


@pytest.mark.parametrize("synchronous", [False, True], ids=["asynchronous", "generations"])
@pytest.mark.parametrize("seed", range(10))
def test_toy_pbt_finds_what_neither_fixed_member_can(seed, synchronous):
    # Two members from h = (1, 0) and (0, 1), ready every 4 steps. Multiplying a zero by {0.8, 1.2}
    # leaves it zero, so explore also resamples a hyperparameter with probability 0.25 (Jaderberg et
    # al. perturb the toy's h with additive noise for the same reason).
    pbt = PBT(TOY.space, population=2, ready=4, max_budget=200, resample_probability=0.25,
              synchronous=synchronous, metric="Q", mode="max")
    result = Simulator(pbt, TOY, 2, seed=seed, report_every=4, enqueue=GRID_MEMBERS).run()
    assert result.finished
    assert max(t.best for t in result.state.trials) > 1.05
    assert any(t.info.get("clones") for t in result.state.trials)


def test_the_best_schedule_replays_from_scratch_to_the_same_model():
    pbt = PBT(TOY.space, population=2, ready=4, max_budget=60, resample_probability=0.25,
              metric="Q", mode="max")
    result = Simulator(pbt, TOY, 2, seed=3, report_every=4, enqueue=GRID_MEMBERS).run()
    schedule = best_schedule(result.state, maximise=True)
    assert schedule[0][0] == 0 and [s for s, _, _ in schedule] == sorted(s for s, _, _ in schedule)
    # Replay: train one model from scratch, switching hyperparameters where the schedule says.
    model = TOY.initial(schedule[0][1])
    bounds = [s for s, _, _ in schedule[1:]] + [60]
    for (start, config, _), stop in zip(schedule, bounds):
        model = TOY.train(config, model, start, stop)
    best = max(result.state.trials, key=lambda t: t.best)
    assert TOY.evaluate({}, model, 60) == pytest.approx(best.value, abs=1e-12)


def test_exploit_and_explore_are_one_step_and_the_loser_resumes_from_the_winner():
    pbt = PBT({"lr": loguniform(1e-4, 1.0)}, population=2, ready=2, max_budget=10, metric="loss")
    state = pbt.initial_state(0)
    starts = step(pbt, state, WorkerJoined("a")) + step(pbt, state, WorkerJoined("b"))
    assert [d.trial for d in starts] == [0, 1]
    for tid, loss in ((0, 0.1), (1, 0.9)):
        step(pbt, state, ResultReported(tid, 1, 2, {"loss": loss}))
        step(pbt, state, CheckpointStored(tid, 1, 2, f"ckpt-{tid}"))
    assert isinstance(step(pbt, state, AttemptFinished(0, 1))[0], PromoteTrial)  # the winner goes on
    [clone] = step(pbt, state, AttemptFinished(1, 1))
    assert isinstance(clone, CloneTrial)
    assert (clone.trial, clone.source, clone.checkpoint, clone.budget) == (1, 0, "ckpt-0", 4)
    assert clone.config["lr"] in (state.trials[0].config["lr"] * 0.8, state.trials[0].config["lr"] * 1.2)
    assert state.trials[1].info["schedule"][-1] == [2, dict(clone.config), 0, 1]
    assert lineage(state, 1, 4) == [[0, state.trials[0].info["schedule"][0][1], 0],
                                    [2, dict(clone.config), 1]]


def test_a_lineage_follows_the_source_as_it_was_when_copied_not_as_it_is_now():
    pbt = PBT({"lr": loguniform(1e-4, 1.0)}, population=3, ready=2, max_budget=10, metric="loss")
    state = pbt.initial_state(0)
    for worker in "abc":
        step(pbt, state, WorkerJoined(worker))

    def segment(tid, loss):
        trial = state.trials[tid]
        step(pbt, state, ResultReported(tid, trial.attempt, trial.budget, {"loss": loss}))
        step(pbt, state, CheckpointStored(tid, trial.attempt, trial.budget, f"ckpt-{tid}-{trial.budget}"))
        return step(pbt, state, AttemptFinished(tid, trial.attempt))

    first = {tid: dict(state.trials[tid].config) for tid in range(3)}
    assert [type(d) for d in segment(0, 0.1)] == [PromoteTrial]
    [clone] = segment(1, 0.5)  # 1 copies 0 at step 2
    assert (clone.trial, clone.source, clone.checkpoint) == (1, 0, "ckpt-0-2")
    assert [type(d) for d in segment(0, 0.05) + segment(0, 0.04)] == [PromoteTrial, PromoteTrial]
    [clone] = segment(2, 0.9)  # 2 copies 0 at step 6
    assert (clone.trial, clone.source, clone.checkpoint) == (2, 0, "ckpt-0-6")
    copied_by_2 = dict(clone.config)
    # Then 0 falls to the bottom and copies 1, which has not checkpointed since it copied 0 at step 2:
    # 0 goes back from step 8 to step 2, and its schedule now holds a clone below the step 2 copied.
    [clone] = segment(0, 5.0)
    assert (clone.trial, clone.source, clone.checkpoint, state.trials[0].checkpoint_step) == (
        0, 1, "ckpt-0-2", 2)
    assert lineage(state, 2) == [[0, first[0], 0], [6, copied_by_2, 2]]
    # 0's weights at step 2 are its own first segment's, passed through 1 and back.
    assert lineage(state, 0) == [[0, first[0], 0], [2, dict(clone.config), 0]]


SPACE = Space({"lr": loguniform(1e-5, 1.0), "wd": uniform(0.0, 0.1, q=0.01), "width": randint(8, 64),
               "act": choice(["relu", "tanh", "gelu"]), "epochs": 10})


@given(st.integers(0, 2**32), st.integers(0, 1000), st.sampled_from([0.0, 0.3, 1.0]))
def test_explore_stays_inside_the_space(seed, counter, resample):
    config = SPACE.sample(derive_rng(seed, "config", counter))
    new = perturb(SPACE, config, derive_rng(seed, "explore", counter), (0.5, 0.8, 1.25, 2.0), resample)
    assert 1e-5 <= new["lr"] <= 1.0 and 0.0 <= new["wd"] <= 0.1 and 8 <= new["width"] <= 64
    assert isinstance(new["width"], int) and new["act"] in ("relu", "tanh", "gelu")
    assert new["epochs"] == 10
    if resample == 0.0:
        assert abs(SPACE.params["act"].values.index(new["act"]) - SPACE.params["act"].values.index(config["act"])) <= 1


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"population": 1}, "`population` is 1, but must be an int >= 2"),
        ({"quantile": 0.75}, "`quantile` is 0.75, but must be in (0, 0.5]"),
        ({"factors": []}, "`factors` is (), but must be a non-empty list of numbers > 0"),
        ({"ready": 10, "max_budget": 5}, "`max_budget` is 5, but must be >= ready (10)"),
        ({"resample_probability": 2}, "`resample_probability` is 2, but must be in [0, 1]"),
    ],
    ids=["population", "quantile", "factors", "budget", "resample"],
)
def test_bad_pbt_settings_are_refused(settings, message):
    with pytest.raises(ValueError) as error:
        PBT({"lr": uniform(0, 1)}, **settings)
    assert str(error.value) == message


def test_the_noisy_quadratic_model_rewards_a_late_decay():
    # The premise of the schedule benchmark (Wu et al. 2018): on this task a two-phase schedule beats
    # every constant learning rate, so a tuner that decays greedily early has something to lose.
    from rung.algorithms.benchmarks import NoisyQuadratic

    nqm, steps = NoisyQuadratic(), 1000
    start = nqm.initial({})
    final = lambda config: nqm.evaluate(config, nqm.train(config, start, 0, steps), steps)  # noqa: E731
    best_constant = min(final({"lr": lr}) for lr in [0.01 * 1.25**k for k in range(30)])
    assert final({"lr": 0.38, "lr_late": 0.063, "switch": 500}) < 0.6 * best_constant
    # One coordinate by hand: h_1 = 1 and lr 1 zero its mean in one step and leave variance noise * 1.
    model = nqm.train({"lr": 1.0}, start, 0, 1)
    assert model[0][0] == 0.0 and model[1][0] == pytest.approx(nqm.noise)
