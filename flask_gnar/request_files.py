"""The request figures of each serve() worker, in shared memory, and their collector.

Counting a request is the one thing GnarMetrics does on every request, so it is
kept to two additions into a memory-mapped table of doubles: each worker owns
two files in the run's metrics folder,

- ``http-<pid>.labels``: one JSON line ``[method, route, status]`` per row, written
  (and flushed) before the row is first counted;
- ``http-<pid>.rows``: the rows, ``ROW`` doubles each: the sum of the durations and
  one count per duration bucket (their total is the request count).

A scrape adds up the rows of every worker, dead ones included (so counters never
go backwards), and hands prometheus_client a counter and a histogram family.
prometheus_client's own multiprocess values cost five to ten times more per
request here (a process-wide lock, a pid check and a key lookup per value).
"""

from __future__ import annotations

import json
import logging
import mmap
import os
from bisect import bisect_left
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Generic, TextIO, TypeVar

from prometheus_client import Histogram
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import INF, floatToGoString

if TYPE_CHECKING:  # pragma: no cover
    from werkzeug.routing import Rule

log = logging.getLogger(__name__)
Row = TypeVar("Row")

HTTP_REQUESTS = "gnar_http_requests"
HTTP_REQUESTS_HELP = "HTTP requests answered, by method, URL rule and status."
HTTP_DURATION = "gnar_http_request_duration_seconds"
HTTP_DURATION_HELP = "Time from the start of a request to its response, by method and URL rule."

#: prometheus_client's default latency buckets, and +Inf.
BUCKETS = (*Histogram.DEFAULT_BUCKETS[:-1], INF)
#: The ``le`` label of each bucket, as prometheus_client writes it.
BUCKET_LABELS = tuple(floatToGoString(bound) for bound in BUCKETS)  # type: ignore[no-untyped-call]
FIRST_BUCKET = BUCKETS[0]
ROW = 1 + len(BUCKETS)
#: Rows per worker: label sets are bounded by URL rules x methods x statuses; the
#: file is sparse, so only the rows in use take memory.
MAX_ROWS = 16384
DOUBLE = 8
#: The endpoint of GnarMetrics' own view: scrapes are not counted.
METRICS_ENDPOINT = "gnar_metrics"
#: Methods counted under their own name; anything else a client sends is ``OTHER``.
KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"}
)
UNMATCHED_ROUTE = "none"


def request_labels(rule: Rule | None, method: str, status: str) -> tuple[str, str, int] | None:
    """``(method, route, status code)`` of a request, or None for a scrape (not counted).

    The route is the URL rule (``none`` when nothing matched): the labels stay
    bounded whatever URLs and methods clients send.
    """
    if rule is None:
        route = UNMATCHED_ROUTE
    elif rule.endpoint == METRICS_ENDPOINT:
        return None
    else:
        route = rule.rule
    return (method if method in KNOWN_METHODS else "OTHER", route, int(status[:3]))


class RowsByRequest(Generic[Row]):
    """Where each kind of request is counted, found from what the request path has at
    hand (the matched rule, the method, the status line) without building its labels."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str | None, str, str], Row | None] = {}
        self.by_labels: dict[tuple[str, str, int], Row | None] = {}

    def row_of(self, rule: Rule | None, method: str, status: str) -> Row | None:
        """The row of a request (None: not counted)."""
        try:
            return self.rows[None if rule is None else rule.rule, method, status]
        except KeyError:
            return self.first_row_of(rule, method, status)

    def first_row_of(self, rule: Rule | None, method: str, status: str) -> Row | None:
        """The row of a request not seen before, remembered."""
        labels = request_labels(rule, method, status)
        if labels is None:
            row = None
        elif labels in self.by_labels:
            row = self.by_labels[labels]
        else:
            row = self.by_labels[labels] = self.new_row(labels)
        if method in KNOWN_METHODS:  # a client's made-up methods would grow the dict
            self.rows[None if rule is None else rule.rule, method, status] = row
        return row

    def new_row(self, labels: tuple[str, str, int]) -> Row | None:
        raise NotImplementedError


def labels_file(folder: Path, pid: int) -> Path:
    return folder / f"http-{pid}.labels"


def rows_in(labels_path: Path) -> int:
    """Rows a labels file names, a last line cut short included."""
    try:
        text = labels_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return 0
    return text.count("\n") + (0 if not text or text.endswith("\n") else 1)


class RequestFiles(RowsByRequest[int]):
    """One worker's table. Not locked: bjoern calls the app from one thread.

    A worker whose pid a dead worker had before it finds that worker's table and
    adds its rows after those (the dead worker's figures stay counted).
    """

    def __init__(self, folder: Path) -> None:
        super().__init__()
        pid = os.getpid()
        path = labels_file(folder, pid)
        self.first_row = rows_in(path)
        self.labels: TextIO = path.open("a", encoding="utf-8")
        if self.first_row and not path.read_text(encoding="utf-8").endswith("\n"):
            self.labels.write("\n")  # a line cut short by the dead worker: a row of its own
        descriptor = os.open(folder / f"http-{pid}.rows", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            os.ftruncate(descriptor, MAX_ROWS * ROW * DOUBLE)
            self.map = mmap.mmap(descriptor, MAX_ROWS * ROW * DOUBLE)
        finally:
            os.close(descriptor)
        self.figures = memoryview(self.map).cast("d")

    def request(self, rule: Rule | None, method: str, status: str, seconds: float) -> None:
        """Count one request; ``status`` is the WSGI status line (``"200 OK"``)."""
        try:  # row_of, inline: this runs on every request
            start = self.rows[None if rule is None else rule.rule, method, status]
        except KeyError:
            start = self.first_row_of(rule, method, status)
        if start is not None:
            figures = self.figures
            figures[start] += seconds
            figures[start + 1 + (0 if seconds <= FIRST_BUCKET else bisect_left(BUCKETS, seconds))] += 1.0

    def close(self) -> None:
        self.figures.release()
        self.map.close()
        self.labels.close()

    def new_row(self, labels: tuple[str, str, int]) -> int | None:
        row = self.first_row + len(self.by_labels)
        if row >= MAX_ROWS:
            log.error("metrics: more than %d label sets; %s %s %s is not counted", MAX_ROWS, *labels)
            return None
        self.labels.write(json.dumps(labels) + "\n")
        self.labels.flush()
        return row * ROW


def read_rows(labels_path: Path) -> Iterator[tuple[list[str | int], "memoryview[float]"]]:
    """``([method, route, status], row)`` for each complete label line of one worker."""
    lines = labels_path.read_text(encoding="utf-8").split("\n")[:-1]
    if not lines:
        return
    with labels_path.with_suffix(".rows").open("rb") as rows_file:
        data = memoryview(rows_file.read(len(lines) * ROW * DOUBLE)).cast("d")
    for index, line in enumerate(lines):
        try:
            labels = json.loads(line)
        except ValueError:  # cut short by a worker that died while writing it
            continue
        yield labels, data[index * ROW:(index + 1) * ROW]


class RequestFilesCollector:
    """A prometheus_client collector adding up every worker's table in ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def collect(self) -> Iterator[Metric]:
        totals: dict[tuple[str, str, str], float] = {}
        histograms: dict[tuple[str, str], list[float]] = {}
        for path in sorted(self.folder.glob("http-*.labels")):
            for (method, route, status), row in read_rows(path):
                key = (str(method), str(route), str(status))
                totals[key] = totals.get(key, 0.0) + sum(row[1:])
                histogram = histograms.setdefault(key[:2], [0.0] * ROW)
                for index in range(ROW):
                    histogram[index] += row[index]
        yield self.counter(totals)
        yield self.histogram(histograms)

    @staticmethod
    def counter(totals: dict[tuple[str, str, str], float]) -> Metric:
        family = CounterMetricFamily(HTTP_REQUESTS, HTTP_REQUESTS_HELP,
                                     labels=["method", "route", "status"])
        for labels, value in sorted(totals.items()):
            family.add_metric(list(labels), value)
        return family

    @staticmethod
    def histogram(histograms: dict[tuple[str, str], list[float]]) -> Metric:
        family = HistogramMetricFamily(HTTP_DURATION, HTTP_DURATION_HELP,
                                       labels=["method", "route"])
        for labels, (total, *counts) in sorted(histograms.items()):
            cumulative, buckets = 0.0, []
            for label, count in zip(BUCKET_LABELS, counts):
                cumulative += count
                buckets.append((label, cumulative))
            family.add_metric(list(labels), buckets, sum_value=total)
        return family
