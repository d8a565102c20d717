"""The plots: docs/drain.png (drain rate against handler count, flask-tasks and PGQueuer) and docs/hosts.png
(the drain across hosts), from the medians of the runs."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  after the backend is chosen

from bench.context import Figures  # noqa: E402


def _plot_lines(
    figures: Figures, counts: tuple[int, ...], lines: list[tuple[str, str, str]], xlabel: str, title: str, path: Path
) -> None:
    """Tasks/s against process count: one line per (figure key prefix, label, style), its points `{prefix}_{n}`."""
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for prefix, label, style in lines:
        points = [(n, figures.get(f"{prefix}_{n}")) for n in counts]
        xs = [n for n, value in points if value is not None]
        ys = [value for _, value in points if value is not None]
        if xs:
            ax.plot(xs, ys, style, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("no-op tasks per second")
    ax.set_xticks(list(counts))
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def plot_drain(figures: Figures, counts: tuple[int, ...], path: Path) -> None:
    lines = [("drain_ours", "flask-tasks", "o-"), ("drain_pgq", "PGQueuer 1.6.0", "s-")]
    title = "Drain rate (PGQueuer batch_size=100; flask-tasks defaults)"
    _plot_lines(figures, counts, lines, "handler / worker processes", title, path)


# (n) the hosts measurement's lines: figure key part, label, line style
HOSTS_LINES = (
    ("loop", "on the host, no proxy (0 ms)", "o-"),
    ("proxy0", "3 namespaces, proxy, +0 ms", "x:"),
    ("2ms", "3 namespaces, proxy, +2 ms RTT", "s-"),
    ("10ms", "3 namespaces, proxy, +10 ms RTT", "^-"),
)


def plot_hosts(figures: Figures, counts: tuple[int, ...], path: Path) -> None:
    """docs/hosts.png: tasks/s against handlers spread over 3 network namespaces, one line per RTT."""
    lines = [(f"hosts_{key}", label, style) for key, label, style in HOSTS_LINES]
    title = "Drain rate across hosts (no-op tasks; handler defaults)"
    _plot_lines(figures, counts, lines, "handler processes", title, path)
