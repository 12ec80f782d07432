"""What the `aqa weights` commands print: the registry table, download progress bars, fetch outcomes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from aqa_cli.models.registry import Progress as ProgressCallback
from aqa_cli.models.registry import WeightsRecord, cache_dir, cached_path
from aqa_cli.report import console, status_console


def registry_rows(records: dict[str, WeightsRecord]) -> list[dict]:
    """Each record as plain JSON, with where its file goes and whether it is there."""
    return [
        {**record.to_dict(), "path": str(cached_path(record)), "cached": cached_path(record).is_file()}
        for record in records.values()
    ]


def print_weights_list(records: dict[str, WeightsRecord], as_json: bool) -> None:
    rows = registry_rows(records)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title=f"pretrained weights (cache: {cache_dir()})")
    table.add_column("name", no_wrap=True)
    table.add_column("what it is")
    table.add_column("size", justify="right", no_wrap=True)
    table.add_column("cached", no_wrap=True)
    for row in rows:
        size = f"~{row['size_mb']:.0f} MB" if row["size_mb"] else "?"
        cached = "yes" if row["cached"] else "no" if row["url"] else "no (by hand)"
        table.add_row(row["name"], row["description"], size, cached)
    console.print(table)


@contextmanager
def download_progress() -> Iterator[ProgressCallback]:
    """A rich download bar per file (on stderr); yields the callback the registry calls as it downloads."""
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=status_console,
        transient=True,  # the line printed afterwards (or the error) says how it went
    )
    tasks: dict[str, int] = {}

    def update(record: WeightsRecord, done: int, total: int | None) -> None:
        if record.name not in tasks:
            progress.start()
            tasks[record.name] = progress.add_task(f"download {record.name}", total=total)
        progress.update(tasks[record.name], completed=done, total=total)

    try:
        yield update
    finally:
        progress.stop()


def print_fetched(record: WeightsRecord, sha256: str, downloaded: bool) -> None:
    what = "downloaded to" if downloaded else "already in the cache:"
    console.print(
        f"{record.name}: {what} {cached_path(record)} (sha256 {sha256[:16]}...)",
        highlight=False,
        soft_wrap=True,
    )


def print_by_hand(instructions: str) -> None:
    console.print(instructions, highlight=False, soft_wrap=True)
