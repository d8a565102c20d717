"""The task registry: registration rules, argument validation and the description the API lists."""

from __future__ import annotations

from typing import Annotated, Optional

import pytest
from pydantic import Field

from flask_tasks.registry import DuplicateTaskError, Registry, Source, TaskArgsError, TaskType, type_name


def register(func) -> TaskType:
    """func registered in a fresh registry, as its TaskType."""
    reg = Registry()
    reg.task(func)
    return reg.get(func.__name__)


def wrong_type(param: str, wanted: str) -> str:
    return f"the passed param [{param}] doesnt match the required type: [{wanted}]."


# -- registering ------------------------------------------------------------------


def test_task_registers_under_the_function_name_and_returns_it_unchanged():
    reg = Registry()

    def add(x: int, y: int) -> int:
        return x + y

    assert reg.task(add) is add
    assert reg.names() == ["add"]
    assert reg.get("add").func is add
    assert reg.get("add").name == "add"
    assert reg.get("nope") is None


def test_duplicate_name_raises_at_decoration():
    reg = Registry()

    @reg.task
    def job(x: int) -> int:
        return x

    with pytest.raises(DuplicateTaskError, match=r"\[job\]"):

        @reg.task
        def job(y: str) -> str:  # noqa: F811  the point of the test
            return y

    with pytest.raises(DuplicateTaskError, match=r"\[job\]"):

        @reg.task(name="job")
        def other(z: int) -> int:
            return z

    assert reg.get("job").model.model_fields.keys() == {"x"}  # the first one is kept


def test_task_with_name():
    reg = Registry()

    @reg.task(name="renamed")
    def original(x: int) -> int:
        return x

    assert reg.names() == ["renamed"]
    assert reg.get("renamed").func is original
    assert reg.get("original") is None
    assert original(4) == 4


def test_registries_are_independent():
    first, second = Registry(), Registry()

    @first.task
    def job() -> None:
        return None

    second.task(job)  # no DuplicateTaskError: another registry
    assert first.names() == second.names() == ["job"]


def test_missing_annotation_raises_type_error():
    reg = Registry()
    with pytest.raises(TypeError, match="y needs a type annotation"):

        @reg.task
        def job(x: int, y) -> int:
            return x

    assert reg.names() == []


def varargs(*args: int) -> None:
    pass


def varkwargs(**kwargs: int) -> None:
    pass


def positional_only(x: int, /) -> None:
    pass


@pytest.mark.parametrize("func", [varargs, varkwargs, positional_only])
def test_parameters_that_are_not_plain_named_raise_type_error(func):
    with pytest.raises(TypeError, match="plain named parameter"):
        Registry().task(func)


def test_description_is_the_first_paragraph_of_the_docstring():
    def job() -> None:
        """Do the job.

        Details that the list of task types leaves out.
        """

    def undocumented() -> None:
        pass

    assert register(job).description == "Do the job."
    assert register(undocumented).description == ""


# -- validating ---------------------------------------------------------------------


def test_validate_returns_args_with_defaults_filled_in():
    def job(x: int, scale: float = 2.0, label: str = "a", verbose: bool = False) -> None:
        pass

    task_type = register(job)
    assert task_type.validate({"x": 1}) == {"x": 1, "scale": 2.0, "label": "a", "verbose": False}
    assert task_type.validate({"x": 1, "label": "b"}) == {"x": 1, "scale": 2.0, "label": "b", "verbose": False}


def test_optional_with_none_default_is_filled_in():
    def job(limit: Optional[float] = None) -> None:  # noqa: UP045  the older spelling users write
        pass

    task_type = register(job)
    assert task_type.validate({}) == {"limit": None}
    assert task_type.validate({"limit": None}) == {"limit": None}
    assert task_type.validate({"limit": 2.5}) == {"limit": 2.5}
    with pytest.raises(TaskArgsError):
        task_type.validate({"limit": "2.5"})


@pytest.mark.parametrize("value", [True, False, "1", 1.5, 1.0, None, [1]])
def test_int_is_strict(value):
    def job(x: int) -> None:
        pass

    with pytest.raises(TaskArgsError) as err:
        register(job).validate({"x": value})
    assert str(err.value) == wrong_type("x", "int")


def test_int_accepts_ints_of_any_size():
    def job(x: int) -> None:
        pass

    assert register(job).validate({"x": 10**30}) == {"x": 10**30}


def test_int_is_accepted_for_float_and_becomes_float():
    def job(x: float) -> None:
        pass

    args = register(job).validate({"x": 1})
    assert args == {"x": 1.0}
    assert isinstance(args["x"], float)


@pytest.mark.parametrize("value", ["1.5", True, None, [1.5]])
def test_float_is_strict(value):
    def job(x: float) -> None:
        pass

    with pytest.raises(TaskArgsError) as err:
        register(job).validate({"x": value})
    assert str(err.value) == wrong_type("x", "float")


@pytest.mark.parametrize("value", [1, "true", None])
def test_bool_is_strict(value):
    def job(flag: bool) -> None:
        pass

    with pytest.raises(TaskArgsError) as err:
        register(job).validate({"flag": value})
    assert str(err.value) == wrong_type("flag", "bool")


def test_str_is_strict():
    def job(s: str) -> None:
        pass

    with pytest.raises(TaskArgsError) as err:
        register(job).validate({"s": 5})
    assert str(err.value) == wrong_type("s", "str")


def test_list_of_float_checks_each_item():
    def job(r: list[float]) -> None:
        pass

    task_type = register(job)
    args = task_type.validate({"r": [1, 2.5, -3]})
    assert args == {"r": [1.0, 2.5, -3.0]}
    assert all(isinstance(v, float) for v in args["r"])
    assert task_type.validate({"r": []}) == {"r": []}
    for bad in ([1, "a"], [1, None], [True], "1,2", {"0": 1}, 1.0):
        with pytest.raises(TaskArgsError) as err:
            task_type.validate({"r": bad})
        assert str(err.value) == wrong_type("r", "list[float]"), bad


def test_dict_is_accepted():
    def job(options: dict) -> None:
        pass

    task_type = register(job)
    assert task_type.validate({"options": {"a": [1, 2], "b": None}}) == {"options": {"a": [1, 2], "b": None}}
    assert task_type.validate({"options": {}}) == {"options": {}}
    with pytest.raises(TaskArgsError) as err:
        task_type.validate({"options": [["a", 1]]})
    assert str(err.value) == wrong_type("options", "dict")


def test_missing_and_extra_args():
    def job(x: int, y: int = 0) -> None:
        pass

    task_type = register(job)
    with pytest.raises(TaskArgsError) as err:
        task_type.validate({"y": 1})
    assert str(err.value) == "the required param [x] was not passed."
    with pytest.raises(TaskArgsError) as err:
        task_type.validate({"x": 1, "z": 2})
    assert str(err.value) == "the passed param [z] is not required."


def test_constraint_violation_names_the_param():
    def job(n: Annotated[int, Field(ge=1, le=10)]) -> None:
        pass

    task_type = register(job)
    assert task_type.validate({"n": 10}) == {"n": 10}
    for bad in (0, 11):
        with pytest.raises(TaskArgsError, match=r"^the passed param \[n\] is invalid: "):
            task_type.validate({"n": bad})
    with pytest.raises(TaskArgsError) as err:
        task_type.validate({"n": "5"})
    assert str(err.value) == wrong_type("n", "int")


def test_validate_does_not_change_its_input():
    def job(x: float, y: int = 3) -> None:
        pass

    args = {"x": 1}
    register(job).validate(args)
    assert args == {"x": 1}


# -- describing ---------------------------------------------------------------------


def test_describe_shape():
    def job(
        n: Annotated[int, Field(ge=1)],
        points: list[float],
        limit: Optional[float] = None,  # noqa: UP045
        drag: bool = False,
    ) -> None:
        """Do the job.

        More.
        """

    reg = Registry()
    reg.task(job)
    described = reg.describe()
    assert list(described) == ["job"]
    entry = described["job"]
    assert entry["description"] == "Do the job."
    assert entry["args"] == {
        "n": {"type": "int", "required": True},
        "points": {"type": "list[float]", "required": True},
        "limit": {"type": "Optional[float]", "required": False, "default": None},
        "drag": {"type": "bool", "required": False, "default": False},
    }
    schema = entry["json_schema"]
    assert schema["type"] == "object"
    assert schema["required"] == ["n", "points"]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["n"]["minimum"] == 1
    assert schema["properties"]["points"] == {"items": {"type": "number"}, "title": "Points", "type": "array"}


def test_describe_lists_types_by_name():
    reg = Registry()
    for name in ("b", "c", "a"):
        reg.task(lambda: None, name=name)
    assert reg.names() == ["a", "b", "c"]
    assert list(reg.describe()) == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("annotation", "name"),
    [
        (int, "int"),
        (float, "float"),
        (str, "str"),
        (bool, "bool"),
        (dict, "dict"),
        (list[float], "list[float]"),
        (dict[str, int], "dict[str, int]"),
        (Optional[float], "Optional[float]"),  # noqa: UP045
        (Annotated[int, Field(ge=1)], "int"),
        (Annotated[list[float], Field(min_length=3)], "list[float]"),
    ],
)
def test_type_name(annotation, name):
    assert type_name(annotation) == name


# -- sources --------------------------------------------------------------------------


def test_a_type_records_the_module_of_its_function():
    def job() -> None:
        pass

    assert register(job).source == Source(__name__)
    assert str(Source(__name__)) == f"module {__name__}"
    assert Source(__name__).describe() == {"module": __name__}


def test_types_registered_while_loading_a_pack_record_the_pack():
    reg = Registry()
    with reg.loading_pack("some-pack", "1.2.3"):
        reg.task(lambda: None, name="packed")
    reg.task(lambda: None, name="plain")
    packed = Source(__name__, "some-pack", "1.2.3")
    assert reg.get("packed").source == packed
    assert reg.get("plain").source == Source(__name__)
    assert str(packed) == f"pack some-pack 1.2.3 ({__name__})"
    assert reg.describe()["packed"]["source"] == {"pack": "some-pack", "version": "1.2.3", "module": __name__}
    assert reg.describe()["plain"]["source"] == {"module": __name__}


def test_a_duplicate_names_both_sources():
    reg = Registry()
    reg.task(lambda: None, name="job")
    with pytest.raises(DuplicateTaskError) as err, reg.loading_pack("other-pack", "0.1"):
        reg.task(lambda: None, name="job")
    assert (
        str(err.value)
        == f"task type [job] is defined twice: by module {__name__} and by pack other-pack 0.1 ({__name__})"
    )
    with pytest.raises(DuplicateTaskError) as err:
        reg.task(lambda: None, name="job")
    assert str(err.value) == f"task type [job] is defined twice: in module {__name__}"


def test_loading_pack_ends_with_its_block_even_on_an_error():
    reg = Registry()
    with pytest.raises(RuntimeError), reg.loading_pack("broken-pack", "1"):
        raise RuntimeError("the pack failed to import")
    reg.task(lambda: None, name="after")
    assert reg.get("after").source == Source(__name__)
