"""The shipped example tasks in tasks.py, called directly."""

from __future__ import annotations

import json
import math
import time

import pytest

import tasks

BALL = {"dt": 0.01, "r0": [0.0, 0.0, 1.0], "v0": [10.0, 0.0, 10.0], "mass": 0.145, "radius": 0.0366}


def naive_primes(count: int) -> list[int]:
    """The first `count` primes by trial division."""
    found: list[int] = []
    candidate = 2
    while len(found) < count:
        if all(candidate % p for p in found if p * p <= candidate):
            found.append(candidate)
        candidate += 1
    return found


def test_add():
    assert tasks.add(1, 2) == 3
    assert tasks.add(-5, 5) == 0
    assert tasks.add(10**20, 1) == 10**20 + 1


def test_echo():
    assert tasks.echo("test") == {"required_arg": "test", "length": 4}
    assert tasks.echo("") == {"required_arg": "", "length": 0}


def test_noop():
    assert tasks.noop() is None


def test_sleep():
    start = time.monotonic()
    assert tasks.sleep(0.05) == 0.05
    assert time.monotonic() - start >= 0.05
    assert tasks.sleep(0) == 0


@pytest.mark.parametrize(("n", "expected"), [(1, 2), (2, 3), (5, 11), (6, 13), (10, 29), (10_000, 104_729)])
def test_prime(n, expected):
    assert tasks.prime(n) == expected


def test_prime_matches_a_naive_count():
    primes = naive_primes(200)
    assert [tasks.prime(n) for n in range(1, 201)] == primes


@pytest.mark.parametrize(("n", "expected"), [(0, 0), (1, 1), (2, 1), (10, 55), (100, 354_224_848_179_261_915_075)])
def test_fibonacci(n, expected):
    assert tasks.fibonacci(n) == expected


def test_fibonacci_recurrence():
    values = [tasks.fibonacci(n) for n in range(30)]
    assert all(values[n] == values[n - 1] + values[n - 2] for n in range(2, 30))


def test_mov3d_trajectory_shape():
    out = tasks.mov3d(**BALL)
    assert set(out) == {"r", "v", "a", "alpha", "w", "t"}
    lengths = {key: len(values) for key, values in out.items()}
    assert len(set(lengths.values())) == 1, lengths
    assert lengths["t"] > 2
    assert out["r"][0] == BALL["r0"]
    assert out["v"][0] == BALL["v0"]
    assert out["t"][0] == 0.0
    assert out["t"][1] == pytest.approx(BALL["dt"])
    assert all(len(vector) == 3 for key in ("r", "v", "a", "alpha", "w") for vector in out[key])
    assert all(vector == [0.0, 0.0, 0.0] for key in ("alpha", "w") for vector in out[key])
    assert all(point[2] >= 0.0 for point in out["r"][:-1])  # in the air until the last point ...
    assert out["r"][-1][2] < 0.0  # ... where it has landed
    json.dumps(out)  # a result must be JSON-serialisable


def test_mov3d_without_drag_is_a_parabola():
    out = tasks.mov3d(**BALL)
    assert all(a == [0.0, 0.0, -9.81] for a in out["a"])
    assert all(v[0] == 10.0 for v in out["v"])  # no horizontal force
    # Landing from 1 m up: 1 + 10 t - 9.81 t^2 / 2 = 0.
    flight_time = (10 + math.sqrt(10**2 + 2 * 9.81 * 1)) / 9.81
    assert out["t"][-1] == pytest.approx(flight_time, abs=2 * BALL["dt"])
    assert out["r"][-1][0] == pytest.approx(10 * flight_time, abs=0.3)
    assert out["r"][-1][1] == 0.0


def test_mov3d_drag_shortens_the_range():
    plain = tasks.mov3d(**BALL)
    dragged = tasks.mov3d(**BALL, drag=True)
    assert dragged["r"][-1][2] < 0.0
    assert dragged["r"][-1][0] < plain["r"][-1][0] - 1.0
    assert dragged["t"][-1] < plain["t"][-1]
    assert dragged["a"][0][0] < 0.0  # drag opposes the horizontal motion


def test_mov3d_stops_after_max_steps(monkeypatch):
    monkeypatch.setattr(tasks, "MAX_STEPS", 50)
    out = tasks.mov3d(dt=0.001, r0=[0.0, 0.0, 1000.0], v0=[0.0, 0.0, 0.0], mass=1.0, radius=0.1)
    assert len(out["t"]) == 50
    assert out["r"][-1][2] > 0.0


def test_divide():
    assert tasks.divide(7, 2) == 3.5
    with pytest.raises(ZeroDivisionError):
        tasks.divide(1, 0)
