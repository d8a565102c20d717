"""Task functions. Each `@task` function becomes a task type of the same name.

The argument annotations are the contract the API checks before a task is
stored: int, float, bool, str, list[...], dict, Optional[...] and defaults.
`Annotated[int, Field(ge=1)]` adds a bound. The return value is the task's
result and must be JSON-serialisable.
"""

import math
import time
from typing import Annotated

from pydantic import Field

from flask_tasks import current_task, task


@task
def echo(required_arg: str) -> dict:
    """The default task: bodies without a `type` come here, as in the first flask-tasks."""
    return {"required_arg": required_arg, "length": len(required_arg)}


@task
def add(x: int, y: int) -> int:
    """Add two integers."""
    return x + y


@task
def divide(x: float, y: float) -> float:
    """x / y: dividing by zero fails the task, an example of an error."""
    return x / y


@task
def noop() -> None:
    """Do nothing; for measuring the server itself."""
    return None


@task
def sleep(seconds: Annotated[float, Field(ge=0, le=3600)]) -> float:
    """Sleep for the given number of seconds and return it."""
    time.sleep(seconds)
    return seconds


@task
def countdown(seconds: Annotated[int, Field(ge=1, le=3600)] = 10) -> str:
    """Count down one second at a time, reporting the progress at each step."""
    for done in range(seconds):
        current_task().progress(done / seconds, f"{seconds - done} s to go")
        time.sleep(1)
    current_task().progress(1.0, "lift-off")
    return "lift-off"


@task
def prime(n: Annotated[int, Field(ge=1, le=2_000_000)]) -> int:
    """The n-th prime number (prime(1) == 2)."""
    # The n-th prime is below n(ln n + ln ln n) for n >= 6.
    limit = 15 if n < 6 else int(n * (math.log(n) + math.log(math.log(n)))) + 1
    sieve = bytearray([1]) * (limit + 1)
    sieve[0:2] = b"\x00\x00"
    for i in range(2, math.isqrt(limit) + 1):
        if sieve[i]:
            sieve[i * i :: i] = bytes(len(range(i * i, limit + 1, i)))
    count = 0
    for i, is_prime in enumerate(sieve):
        count += is_prime
        if count == n:
            return i
    raise AssertionError("sieve bound too small")


@task
def fibonacci(n: Annotated[int, Field(ge=0, le=10_000)]) -> int:
    """The n-th Fibonacci number (fibonacci(0) == 0)."""
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


GRAVITY = (0.0, 0.0, -9.81)
AIR_DENSITY = 1.225  # kg/m^3
DRAG_COEFFICIENT = 0.47  # a smooth sphere
MAX_STEPS = 100_000


@task
def mov3d(
    dt: Annotated[float, Field(gt=0)],
    r0: Annotated[list[float], Field(min_length=3, max_length=3)],
    v0: Annotated[list[float], Field(min_length=3, max_length=3)],
    mass: Annotated[float, Field(gt=0)],
    radius: Annotated[float, Field(gt=0)],
    drag: bool = False,
) -> dict:
    """Trajectory of a sphere thrown from r0 with velocity v0 under gravity, until it lands.

    With `drag`, quadratic air drag slows it. Lists r, v, a (position, velocity,
    acceleration), w, alpha (angular velocity and acceleration: zero, since no
    torque acts on a sphere that starts without spin) and t have equal length.
    Integration is semi-implicit Euler, at most 100,000 steps.
    """
    area = math.pi * radius**2
    k = 0.5 * AIR_DENSITY * DRAG_COEFFICIENT * area / mass if drag else 0.0
    r, v = list(r0), list(v0)
    out: dict[str, list] = {"r": [], "v": [], "a": [], "alpha": [], "w": [], "t": []}
    t = 0.0
    for _ in range(MAX_STEPS):
        speed = math.sqrt(sum(c * c for c in v))
        a = [GRAVITY[i] - k * speed * v[i] for i in range(3)]
        for key, value in (("r", r), ("v", v), ("a", a), ("alpha", [0.0] * 3), ("w", [0.0] * 3)):
            out[key].append(list(value))
        out["t"].append(t)
        if r[2] < 0.0:
            break
        v = [v[i] + a[i] * dt for i in range(3)]
        r = [r[i] + v[i] * dt for i in range(3)]
        t += dt
    return out


@task(protected=True)
def multiply(x: int, y: int) -> int:
    """Multiply two integers: a protected task, posted only with a token that allows it."""
    return x * y
