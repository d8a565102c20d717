"""The pack's task types. flask-tasks imports this module through the pack's entry point."""

from flask_tasks import task


@task
def word_count(text: str) -> int:
    """The number of words in text (runs of whitespace separate them)."""
    return len(text.split())


@task
def reverse(text: str) -> str:
    """text, backwards."""
    return text[::-1]
