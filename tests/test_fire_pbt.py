"""FIRE PBT (Dalibard & Jaderberg 2021): evaluators, hand-offs, sub-populations, and the shared contract.

The scenario tests push hand-made events through `step`: two sub-populations of two members (P1 = members 0
and 1, P2 = members 2 and 3), one evaluator (trial 4), five workers, segments of ten steps, metric Q
maximised. The curves are straight lines, so the verdicts can be read off them (see test_fire_curves.py):
a binomial test of 8 wins in 8 has p = 1/256 < p_stat = 0.01.
"""

import msgpack
import pytest

from rung.algorithms import (
    AttemptFailed,
    AttemptFinished,
    CheckpointStored,
    CloneTrial,
    FirePBT,
    PromoteTrial,
    ResultReported,
    StartTrial,
    TrialStatus,
    WorkerJoined,
    loguniform,
    step,
)
from rung.algorithms.benchmarks import NoisyQuadratic
from rung.algorithms.fire_pbt import default_evaluators, verdict_counts
from rung.algorithms.pbt import best_schedule, lineage
from rung.algorithms.simulate import Simulator
from rung.study import Study

LR = {"lr": loguniform(1e-3, 1.0)}
READY = 10


def fire(**settings):
    return FirePBT(LR, **{"subpopulations": 2, "size": 2, "evaluators": 1, "ready": READY,
                          "max_budget": 40, "max_eval_steps": 30, "metric": "Q", "mode": "max",
                          **settings})


def segment(algorithm, state, tid, values):
    """The trial's current attempt reports `values` on consecutive steps, checkpoints and ends."""
    trial = state.trials[tid]
    attempt, start = trial.attempt, trial.checkpoint_step if trial.checkpoint else 0
    decisions = []
    for i, value in enumerate(values, 1):
        decisions += step(algorithm, state, ResultReported(tid, attempt, start + i, {"Q": value}))
    decisions += step(algorithm, state, CheckpointStored(tid, attempt, start + len(values),
                                                         f"ckpt-{tid}-{attempt}"))
    return decisions + step(algorithm, state, AttemptFinished(tid, attempt))


def line(first, slope):
    return [first + slope * i for i in range(READY)]


def first_segments(algorithm):
    """Every member trains its first segment; P2's first member (2) gets the evaluator."""
    state = algorithm.initial_state(0)
    starts = []
    for worker in range(5):
        starts += step(algorithm, state, WorkerJoined(f"w{worker}"))
    assert [(type(d), d.trial) for d in starts] == [(StartTrial, tid) for tid in range(4)]
    decisions = {tid: segment(algorithm, state, tid, values) for tid, values in
                 [(0, line(0.01, 0.01)), (1, line(0.005, 0.005)), (2, line(0.02, 0.01)),
                  (3, line(0.02, 0.01))]}
    return state, decisions


def test_members_form_subpopulations_and_the_longest_unevaluated_parent_gets_the_evaluator():
    algorithm = fire()
    state, decisions = first_segments(algorithm)
    assert [t.info["sub"] for t in state.trials[:4]] == [1, 1, 2, 2]
    # P2's member 2 is the first parent with a checkpoint (the idle fifth worker takes the evaluator as
    # soon as it is stored); P1's best member (0) is the target, and the evaluator clones member 2's
    # weights with member 0's hyperparameters.
    evaluator, promote = decisions[2]
    assert isinstance(promote, PromoteTrial) and promote.trial == 2  # no evaluator yet: no fitness
    assert isinstance(evaluator, CloneTrial)
    assert (evaluator.trial, evaluator.attempt, evaluator.source, evaluator.checkpoint) == (
        4, 1, 2, "ckpt-2-1")
    assert dict(evaluator.config) == state.trials[0].config
    info = state.trials[4].info
    assert (info["role"], info["parent"], info["target"], info["start"], info["active"]) == (
        "evaluator", 2, 0, READY, True)


def test_p1_evolves_greedily_like_pbt():
    algorithm = fire()
    state, decisions = first_segments(algorithm)
    assert [type(d) for d in decisions[0]] == [PromoteTrial]  # alone in its ranking: goes on
    [clone] = decisions[1]  # the worse of P1 copies the better and perturbs its learning rate
    assert isinstance(clone, CloneTrial) and (clone.trial, clone.source) == (1, 0)
    assert clone.config["lr"] in [state.trials[0].config["lr"] * f for f in algorithm.factors] or (
        clone.config["lr"] in (1e-3, 1.0))  # clipped to the space
    assert state.trials[1].info["losses"] == 1 and state.trials[0].info["losses"] == 0
    assert state.trials[1].info["from"] == [2, READY]  # its curve restarts where it copied


def test_a_clearly_better_evaluator_hands_its_weights_to_the_target_which_keeps_its_own_config():
    algorithm = fire()
    state, _ = first_segments(algorithm)
    # The evaluator starts level with the target's curve and climbs five times as fast: 8 wins in 8.
    done = segment(algorithm, state, 4, line(0.005, 0.05))
    assert state.trials[4].info["verdicts"] == {"success": 1}
    assert state.trials[0].info["handoff"] == [4, "ckpt-4-1", 2 * READY, 1]
    # The evaluator moves on at once, to the parent that has gone longest unevaluated (3, not 2).
    [reassign] = done
    assert isinstance(reassign, CloneTrial)
    assert (reassign.trial, reassign.attempt, reassign.source) == (4, 2, 3)
    assert state.trials[4].info["parent"] == 3
    # Those kept weights are no longer the evaluator's latest: they must outlive its reassignment.
    assert state.trials[4].checkpoint != "ckpt-4-1"
    assert "ckpt-4-1" in algorithm.checkpoints_needed(state)
    # At its next ready point the target takes the evaluator's kept weights, not its new ones.
    [handoff] = segment(algorithm, state, 0, line(0.11, 0.01))
    assert isinstance(handoff, CloneTrial)
    assert (handoff.trial, handoff.source, handoff.checkpoint, handoff.budget) == (
        0, 4, "ckpt-4-1", 3 * READY)
    assert dict(handoff.config) == state.trials[0].config
    member = state.trials[0].info
    assert (member["handoffs"], member["losses"], member["from"], "handoff" in member) == (
        1, 0, [3, 2 * READY], False)
    assert member["schedule"][-1] == [2 * READY, state.trials[0].config, 4, 1]
    assert state.trials[0].checkpoint_step == 2 * READY


def test_a_handed_off_schedule_runs_through_the_parent_the_evaluator_had_at_its_success():
    algorithm = fire()
    state, _ = first_segments(algorithm)
    parent = dict(state.trials[2].config)
    target = dict(state.trials[0].config)
    segment(algorithm, state, 4, line(0.005, 0.05))  # success from member 2's weights
    assert state.trials[4].info["parent"] == 3  # reassigned before the target takes the hand-off
    segment(algorithm, state, 4, [0.001] * READY)  # and trains on from member 3's weights
    [handoff] = segment(algorithm, state, 0, line(0.11, 0.01))
    assert (handoff.trial, handoff.source) == (0, 4)
    # Member 2's weights trained to step 10 with its own rate, then by the evaluator with the target's
    # rate to step 20, then by the target; member 3 has no part in them.
    assert lineage(state, 0) == [[0, parent, 2], [READY, target, 4], [2 * READY, target, 0]]
    assert best_schedule(state, maximise=True) == lineage(state, 0)
    restored = algorithm.load_state(msgpack.unpackb(msgpack.packb(state.to_data())))
    assert lineage(restored, 0) == lineage(state, 0)


def test_a_losing_evaluator_stops_and_is_reassigned():
    algorithm = fire()
    state, _ = first_segments(algorithm)
    # Flat above the target's start: the target overtakes it on every paired point, p = 1.
    [reassign] = segment(algorithm, state, 4, [0.05] * READY)
    assert state.trials[4].info["verdicts"] == {"stop": 1}
    assert "handoff" not in state.trials[0].info
    assert isinstance(reassign, CloneTrial) and (reassign.trial, reassign.source) == (4, 3)
    assert dict(reassign.config) == state.trials[0].config


def test_an_evaluator_without_evidence_either_way_trains_another_segment():
    algorithm = fire()
    state, _ = first_segments(algorithm)
    # Below the target's start throughout: no overlap, and T = 10 <= max_eval_steps.
    [going_on] = segment(algorithm, state, 4, [0.001] * READY)
    assert state.trials[4].info["verdicts"] == {"continue": 1}
    assert isinstance(going_on, PromoteTrial) and going_on.trial == 4 and going_on.budget == 3 * READY


def test_an_evaluator_whose_target_loses_an_evolution_event_is_stopped_at_its_segment_end():
    algorithm = fire()
    state, _ = first_segments(algorithm)
    # The target (0) falls to the bottom of P1 and copies member 1: it lost an evolution event.
    [clone] = segment(algorithm, state, 0, [0.0] * READY)
    assert isinstance(clone, CloneTrial) and clone.trial == 0 and clone.source == 1
    assert state.trials[4].info["active"] is False and state.trials[4].info["verdict"] == "abandoned"
    # The evaluator's segment is not judged: it is reassigned.
    [reassign] = segment(algorithm, state, 4, line(0.005, 0.05))
    assert isinstance(reassign, CloneTrial) and reassign.trial == 4 and reassign.attempt == 2
    assert "handoff" not in state.trials[0].info


def start_members(algorithm, workers, lines):
    """`workers` workers join; member i trains its first segment on `lines[i]`, in id order."""
    state = algorithm.initial_state(0)
    for worker in range(workers):
        step(algorithm, state, WorkerJoined(f"w{worker}"))
    return state, {tid: segment(algorithm, state, tid, values) for tid, values in enumerate(lines)}


def test_the_parent_whose_evaluation_ended_longest_ago_is_evaluated_next():
    # P1 = 0, 1, 2 and P2 = 3, 4, 5; evaluator 6 takes parent 3, then evaluator 7 parent 4.
    algorithm = fire(size=3, evaluators=2)
    p1 = [line(0.01, 0.01), line(0.005, 0.005), line(0.004, 0.004)]
    state, _ = start_members(algorithm, 8, p1 + [line(0.02, 0.01)] * 3)
    assert [(state.trials[t].info["parent"], state.trials[t].info["target"]) for t in (6, 7)] == [
        (3, 0), (4, 0)]
    # Evaluator 7 stops first, and moves on to 5, never evaluated; then evaluator 6 stops. Parent 4's
    # evaluation ended before parent 3's, though 3's began first: 4 is next, not 3 again.
    [reassign] = segment(algorithm, state, 7, [0.05] * READY)
    assert state.trials[7].info["verdicts"] == {"stop": 1} and reassign.source == 5
    [reassign] = segment(algorithm, state, 6, [0.05] * READY)
    assert state.trials[6].info["verdicts"] == {"stop": 1}
    assert isinstance(reassign, CloneTrial) and (reassign.trial, reassign.source) == (6, 4)


def test_a_failed_evaluator_is_replaced_and_its_parent_evaluated_again():
    algorithm = fire(evaluators=2)
    state, _ = start_members(algorithm, 6, [line(0.01, 0.01), line(0.005, 0.005), line(0.02, 0.01),
                                            line(0.02, 0.01)])
    assert [state.trials[t].info["parent"] for t in (4, 5)] == [2, 3]
    decided = step(algorithm, state, AttemptFailed(4, 1, "error in user code"))
    assert state.trials[4].status == TrialStatus.FAILED and state.trials[4].info["active"] is False
    # The worker it freed takes a new evaluator (trial 6) of the parent whose evaluation just ended.
    [replacement] = decided
    assert isinstance(replacement, CloneTrial) and (replacement.trial, replacement.source) == (6, 2)
    assert state.trials[6].info["role"] == "evaluator" and state.trials[6].info["parent"] == 2
    # Evaluator 5 stops, and evaluates the one parent left free.
    [reassign] = segment(algorithm, state, 5, [0.05] * READY)
    assert state.trials[5].info["verdicts"] == {"stop": 1}
    assert isinstance(reassign, CloneTrial) and (reassign.trial, reassign.source) == (5, 3)


def test_an_evaluator_whose_target_fails_is_stopped_at_its_segment_end():
    algorithm = fire()
    state, _ = first_segments(algorithm)
    step(algorithm, state, AttemptFailed(0, state.trials[0].attempt, "error in user code"))
    assert state.trials[4].info["active"] is False
    assert state.trials[4].info["verdict"] == "target finished"
    [reassign] = segment(algorithm, state, 4, line(0.005, 0.05))
    assert isinstance(reassign, CloneTrial) and reassign.trial == 4
    assert "verdicts" not in state.trials[4].info  # the abandoned segment is not judged


def evaluated_parents(algorithm, workers, lines):
    """Members train a first segment on `lines`; the first two evaluators (the trials after the members)
    evaluate P2's members 2 and 3 for a segment, below the target's start (continue), 2's curve rising
    faster: once P2 is ranked, 2 has the positive fitness, 3 the negative."""
    state, _ = start_members(algorithm, workers, lines)
    first = len(lines)
    assert [state.trials[first + i].info["parent"] for i in (0, 1)] == [2, 3]
    for evaluator, values in ((first, line(0.001, 0.0008)), (first + 1, line(0.002, 0.0001))):
        [going_on] = segment(algorithm, state, evaluator, values)
        assert isinstance(going_on, PromoteTrial)
    return state


def test_an_evaluator_whose_parent_loses_an_evolution_event_is_stopped_at_its_segment_end():
    algorithm = fire(evaluators=2)
    state = evaluated_parents(algorithm, 6, [line(0.01, 0.01), line(0.005, 0.005), line(0.02, 0.01),
                                             line(0.02, 0.01)])
    # Member 3 falls to the bottom of P2 by fitness and copies member 2.
    [clone] = segment(algorithm, state, 3, line(0.12, 0.01))
    assert isinstance(clone, CloneTrial) and (clone.trial, clone.source) == (3, 2)
    assert state.trials[5].info["active"] is False and state.trials[5].info["verdict"] == "abandoned"
    [reassign] = segment(algorithm, state, 5, line(0.003, 0.0001))
    assert isinstance(reassign, CloneTrial) and (reassign.trial, reassign.attempt) == (5, 3)
    assert state.trials[5].info["verdicts"] == {"continue": 1}  # the abandoned segment is not judged


def test_a_member_that_leaves_phi_is_no_longer_a_target():
    # Three sub-populations: P1 = 0, 1; P2 = 2, 3 (evaluated by 6 and 7); P3 = 4, 5. P3 has no target
    # until P2 has fitnesses, and T > max_eval_steps = 15 stops an evaluator without overlap.
    algorithm = fire(subpopulations=3, evaluators=2, max_eval_steps=15)
    state = evaluated_parents(algorithm, 8, [line(0.01, 0.01), line(0.005, 0.005)] + [line(0.02, 0.01)] * 4)
    segment(algorithm, state, 2, line(0.12, 0.01))  # ranks P2
    assert state.trials[2].info["fitness"] > 0 > state.trials[3].info["fitness"]
    # Evaluator 6 stops: member 2 leaves Phi, so it has no fitness, and P3's parent 4 (never evaluated)
    # gets member 3 as its target, the one member of P2 still in Phi.
    [reassign] = segment(algorithm, state, 6, [0.002] * READY)
    assert state.trials[6].info["verdicts"] == {"continue": 1, "stop": 1}
    assert "fitness" not in state.trials[2].info
    assert isinstance(reassign, CloneTrial) and (reassign.trial, reassign.source) == (6, 4)
    assert state.trials[6].info["target"] == 3 and dict(reassign.config) == state.trials[3].config


def test_defaults_follow_the_paper():
    algorithm = FirePBT(LR, ready=2400, max_budget=240000)
    assert algorithm.factors == (0.5, 0.8, 1.25, 2.0)
    assert (algorithm.p_stat, algorithm.quantile) == (0.01, 0.25)
    assert algorithm.max_eval_steps == 7200  # the image task's, three segments


def test_a_parent_is_evaluated_only_once_its_weights_have_trained_min_steps_before_eval():
    algorithm = fire(min_steps_before_eval=2 * READY)
    state, decisions = first_segments(algorithm)
    # At step 10 neither parent is eligible: the fifth worker stays idle and no evaluator exists.
    assert [type(d) for d in decisions[2] + decisions[3]] == [PromoteTrial, PromoteTrial]
    assert len(state.trials) == 4 and len(state.idle) == 1
    # Member 2's checkpoint at step 20 makes it eligible at once, before its segment has even ended.
    evaluator, promote = segment(algorithm, state, 2, line(0.12, 0.01))
    assert isinstance(evaluator, CloneTrial)
    assert (evaluator.trial, evaluator.source, evaluator.checkpoint) == (4, 2, "ckpt-2-2")
    assert state.trials[4].info["start"] == 2 * READY
    assert isinstance(promote, PromoteTrial) and promote.trial == 2


@pytest.mark.parametrize(
    "line_, expected",
    [("", (0, 0)), ("min_steps_before_eval = 20", (20, 20)),
     ("min_steps_before_eval = [0, 2.5]", (0, 2.5))],
    ids=["default", "one for all", "one per parent"],
)
def test_min_steps_before_eval_comes_from_a_study_file(tmp_path, line_, expected):
    # Three sub-populations: P2 and P3 are parents.
    path = tmp_path / "study.toml"
    path.write_text(f'trainable = "examples.digits_mlp:train"\n[algorithm]\nname = "fire-pbt"\n'
                    f'subpopulations = 3\n{line_}\n[space]\nlr = ["loguniform", 1e-3, 1.0]\n')
    assert Study.load(path).build().min_steps_before_eval == expected


@pytest.mark.parametrize("subpopulations, size, expected",
                         [(2, 8, 6), (3, 8, 12), (4, 8, 18), (2, 4, 3), (2, 2, 2)],
                         ids=["22 workers", "36 workers", "50 workers", "2x4", "half rounds up"])
def test_three_quarters_of_the_parents_are_evaluators(subpopulations, size, expected):
    # The paper's 22/36/50 workers are 2/3/4 sub-populations of 8 plus 6/12/18 evaluators.
    assert default_evaluators(subpopulations, size) == expected
    assert FirePBT(LR, subpopulations=subpopulations, size=size).evaluators == expected


@pytest.mark.parametrize(
    "settings_, message",
    [
        ({"subpopulations": 1}, "`subpopulations` is 1, but must be an int >= 2"),
        ({"size": 1}, "`size` is 1, but must be an int >= 2"),
        ({"evaluators": 0}, "`evaluators` is 0, but must be an int >= 1"),
        ({"max_eval_steps": 0}, "`max_eval_steps` is 0, but must be a finite number > 0"),
        ({"p_stat": 1.5}, "`p_stat` is 1.5, but must be in (0, 1)"),
        ({"min_steps_before_eval": -1}, "`min_steps_before_eval` is -1, but must be a finite number "
                                        ">= 0, or a list of them with one for P2"),
        ({"min_steps_before_eval": "100"}, "`min_steps_before_eval` is '100', but must be a finite "
                                           "number >= 0, or a list of them with one for P2"),
        ({"subpopulations": 3, "min_steps_before_eval": [100]},
         "`min_steps_before_eval` is [100], but must be a finite number >= 0, or a list of them with "
         "one for each of P2 .. P3"),
        ({"subpopulations": 3, "min_steps_before_eval": [0, None]},
         "`min_steps_before_eval` is [0, None], but must be a finite number >= 0, or a list of them "
         "with one for each of P2 .. P3"),
    ],
    ids=["subpopulations", "size", "evaluators", "max_eval_steps", "p_stat", "min_steps negative",
         "min_steps not a number", "min_steps too few", "min_steps one not a number"],
)
def test_bad_fire_settings_are_refused(settings_, message):
    with pytest.raises(ValueError) as error:
        FirePBT(LR, **settings_)
    assert str(error.value) == message


def test_a_simulated_study_on_the_noisy_quadratic_finishes_and_records_schedules():
    nqm = NoisyQuadratic()
    algorithm = FirePBT(nqm.space, subpopulations=2, size=4, ready=50, max_budget=1000, metric="loss")
    result = Simulator(algorithm, nqm, 8 + algorithm.evaluators, seed=0, report_every=10).run()
    assert result.finished
    members = [t for t in result.state.trials if t.info.get("role") == "member"]
    evaluators = [t for t in result.state.trials if t.info.get("role") == "evaluator"]
    assert len(members) == 8 and len(evaluators) == algorithm.evaluators == 3
    assert all(t.status == TrialStatus.COMPLETED and t.checkpoint_step == 1000 for t in members)
    for member in members:
        schedule = member.info["schedule"]
        assert schedule[0][0] == 0 and all(0 <= s < 1000 and "lr" in c for s, c, _, _ in schedule)
    counts = verdict_counts(result.state)
    assert counts.get("success", 0) >= 1 and counts.get("stop", 0) >= 1
    assert sum(t.info.get("handoffs", 0) for t in members) >= 1
    msgpack.packb(result.state.to_data())  # plain data throughout
