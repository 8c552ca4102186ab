"""Search spaces: validated when built, errors naming the parameter, draws from a derived generator."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rung.algorithms import Space, choice, grid, loguniform, randint, uniform
from rung.algorithms.rng import derive_rng


@pytest.mark.parametrize(
    "domain, message",
    [
        (uniform(1.0, 0.5), "parameter `p`: low is 1.0, but must be < high (0.5)"),
        (uniform(0.0, math.inf), "parameter `p`: high is inf, but must be a finite number"),
        (loguniform(0.0, 1.0), "parameter `p`: low is 0.0, but must be > 0 on a log scale"),
        (loguniform(-1.0, 1.0), "parameter `p`: low is -1.0, but must be > 0 on a log scale"),
        (randint(0, 10, log=True), "parameter `p`: low is 0, but must be > 0 on a log scale"),
        (randint(1.5, 3), "parameter `p`: low is 1.5, but must be an int"),
        (randint(3, 3), "parameter `p`: low is 3, but must be < high (3)"),
        (uniform(0.0, 1.0, q=0.0), "parameter `p`: q is 0.0, but must be in (0, high - low]"),
        (choice([]), "parameter `p`: choice has no values"),
        (grid([]), "parameter `p`: grid has no values"),
        (choice([[1, 2]]), "parameter `p`: choice value [1, 2] is a list, but must be a str, int"),
        (object(), "parameter `p`: fixed value <object"),
    ],
    ids=["bounds", "infinite", "log-zero", "log-negative", "intlog-zero", "int-float", "int-empty",
         "q-zero", "empty-choice", "empty-grid", "unplain-choice", "unplain-fixed"],
)
def test_bad_domains_are_refused_naming_the_parameter(domain, message):
    with pytest.raises(ValueError) as error:
        Space({"p": domain})
    assert str(error.value).startswith(message)


def test_a_space_must_have_parameters():
    with pytest.raises(ValueError, match="non-empty mapping"):
        Space({})


SPACE = Space({
    "lr": loguniform(1e-4, 1e-1),
    "momentum": uniform(0.8, 0.99, q=0.01),
    "layers": randint(1, 8),
    "width": randint(16, 1024, log=True),
    "act": choice(["relu", "tanh"]),
    "batch": grid([32, 64]),
    "epochs": 10,
})


@given(st.integers(0, 2**32), st.integers(0, 10**6))
def test_draws_stay_inside_their_domains(seed, counter):
    config = SPACE.sample(derive_rng(seed, "config", counter))
    assert 1e-4 <= config["lr"] <= 1e-1
    assert 0.8 <= config["momentum"] <= 0.99
    assert abs(config["momentum"] * 100 - round(config["momentum"] * 100)) < 1e-9
    assert config["layers"] in range(1, 9) and isinstance(config["layers"], int)
    assert 16 <= config["width"] <= 1024
    assert config["act"] in ("relu", "tanh") and config["batch"] in (32, 64)
    assert config["epochs"] == 10


def test_draws_are_a_pure_function_of_seed_purpose_and_counter():
    first = SPACE.sample(derive_rng(7, "config", 3))
    assert SPACE.sample(derive_rng(7, "config", 3)) == first
    assert SPACE.sample(derive_rng(7, "config", 4)) != first
    assert SPACE.sample(derive_rng(8, "config", 3)) != first
    assert SPACE.sample(derive_rng(7, "explore", 3)) != first


def test_log_scale_spreads_draws_over_decades():
    space = Space({"lr": loguniform(1e-6, 1.0)})
    draws = [space.sample(derive_rng(0, "config", i))["lr"] for i in range(2000)]
    below = sum(d < 1e-3 for d in draws) / len(draws)
    assert 0.45 < below < 0.55  # half the decades lie below 1e-3


def test_integer_log_scale_reaches_both_ends():
    space = Space({"n": randint(1, 4, log=True)})
    seen = {space.sample(derive_rng(0, "config", i))["n"] for i in range(500)}
    assert seen == {1, 2, 3, 4}


def test_grid_points_walk_every_combination_the_last_parameter_fastest():
    space = Space({"a": grid([1, 2]), "x": uniform(0, 1), "b": choice(["u", "v", "w"])})
    points = list(space.grid_points())
    assert points == [{"a": a, "b": b} for a in (1, 2) for b in ("u", "v", "w")]
    assert [space.grid_point(i) for i in range(space.grid_size())] == points


def test_a_space_round_trips_through_plain_data():
    assert Space.from_data(SPACE.to_data()) == SPACE
    with pytest.raises(ValueError, match="parameter `z`: unknown domain"):
        Space.from_data({"z": ["gaussian", 0, 1]})
