"""Splitting a stream into windows: by event count, by event time, or by count with a time cap.

A window is made of *panes* (``step``-sized pieces); detectors keep one small accumulator per
pane (bin counts, values) and sum the panes of a window when it closes, so sliding windows cost no
more than tumbling ones. Three modes (`WindowSpec.mode`):

* ``count`` (``size`` events, optional ``step`` events dividing ``size``): pane ``p`` holds events
  ``p*step .. (p+1)*step - 1`` of the detector's stream; a window of ``size // step`` panes closes
  when its last pane is full. Tumbling when ``step == size`` (the default).
* ``time`` (``seconds`` of event time, optional ``step`` seconds dividing ``seconds``): pane ``p``
  holds events with ``p*step <= ts < (p+1)*step`` (aligned to the epoch, so every worker agrees on
  the bounds); pane ``p`` closes when the watermark (max event time seen minus
  ``allowed_lateness``) reaches its end. Events for an already-closed pane are late: dropped and
  counted in `Windower.n_late`. Events without a finite ``ts`` are dropped the same way. A
  sliding window is evaluated when a pane that holds events closes (not at empty panes).
* ``capped`` (both ``size`` and ``seconds``, tumbling only): a window starts at its first event
  and closes after ``size`` events, or at the first event at least ``seconds`` of event time after
  its start (that event opens the next window), whichever comes first.

Each closed window reports its event-time bounds (``time`` mode: the aligned bounds; otherwise the
first and last event times it holds), the half-open range of detector event indices it spans and
its number of events.

>>> w = Windower(WindowSpec(size=4, step=2))
>>> a = w.assign(np.arange(5, dtype=float))
>>> a.panes.tolist(), [(c.start_index, c.end_index, c.n) for c in a.closed]
([0, 1, 2], [(0, 4, 4)])
>>> a = w.assign(np.arange(5, 7, dtype=float))
>>> [(c.start_index, c.end_index, c.start_ts, c.end_ts) for c in a.closed], a.evict
([(2, 6, 2.0, 5.0)], [1])
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal, Self

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_WINDOW_SIZE = 5000

WindowMode = Literal["count", "time", "capped"]


class WindowSpec(BaseModel):
    """How to cut the stream into windows (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    size: int | None = Field(None, ge=1)
    seconds: float | None = Field(None, gt=0.0)
    step: float | None = Field(None, gt=0.0)
    allowed_lateness: float = Field(0.0, ge=0.0)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.size is None and self.seconds is None:
            raise ValueError("a window needs a size (events) and/or seconds (event time)")
        if self.step is not None:
            if self.size is not None and self.seconds is not None:
                raise ValueError("a window capped by both size and seconds cannot slide: drop step")
            if self.size is not None:
                if self.step != int(self.step) or self.size % int(self.step):
                    raise ValueError(
                        f"step {self.step} must be a whole number of events dividing {self.size}"
                    )
            elif self.seconds is not None:
                ratio = self.seconds / self.step
                if abs(ratio - round(ratio)) > 1e-9:
                    raise ValueError(f"step {self.step}s must divide the window of {self.seconds}s")
        return self

    @classmethod
    def of(
        cls,
        window_size: int | None = None,
        window_seconds: float | None = None,
        step: float | None = None,
        allowed_lateness: float = 0.0,
    ) -> WindowSpec:
        """Detector-argument style: ``window_size`` defaults to 5000 events unless ``window_seconds`` is set.

        >>> WindowSpec.of().mode, WindowSpec.of(window_seconds=60).mode, WindowSpec.of(100, 60).mode
        ('count', 'time', 'capped')
        """
        if window_size is None and window_seconds is None:
            window_size = DEFAULT_WINDOW_SIZE
        return cls(size=window_size, seconds=window_seconds, step=step, allowed_lateness=allowed_lateness)

    @property
    def mode(self) -> WindowMode:
        if self.size is not None and self.seconds is not None:
            return "capped"
        return "count" if self.size is not None else "time"

    @property
    def pane(self) -> float:
        """Pane length: events (count mode) or seconds (time mode); the window itself when capped."""
        if self.mode == "count":
            return float(self.step or self.size or 1)
        if self.mode == "time":
            return float(self.step or self.seconds or 1.0)
        return float(self.size or 1)

    @property
    def panes_per_window(self) -> int:
        if self.mode == "count":
            return int(self.size or 1) // int(self.pane)
        if self.mode == "time":
            return round((self.seconds or 0.0) / self.pane)
        return 1


@dataclass(frozen=True)
class ClosedWindow:
    """A window whose panes are complete: its panes, event-time bounds, index range and size."""

    panes: tuple[int, ...]
    start_ts: float
    end_ts: float
    start_index: int
    end_index: int
    n: int


@dataclass
class Assignment:
    """What `Windower.assign` made of one batch.

    ``keep``: events that were assigned (the others were late); ``panes``: the distinct panes of
    the kept events, sorted; ``inverse``: for each kept event, its pane's position in ``panes``;
    ``closed``: windows to evaluate now, oldest first; ``evict``: panes no future window needs
    (drop their accumulators after evaluating ``closed``).
    """

    keep: np.ndarray
    panes: np.ndarray
    inverse: np.ndarray
    closed: list[ClosedWindow] = field(default_factory=list)
    evict: list[int] = field(default_factory=list)


_EMPTY_I64 = np.empty(0, dtype=np.int64)


class Windower:
    """Assigns events to panes and tells which windows closed (state is a JSON-able dict)."""

    def __init__(self, spec: WindowSpec) -> None:
        self.spec = spec
        self.n_seen = 0
        self.n_late = 0
        # pane id -> [n, min_ts, max_ts, min_index, max_index]
        self.panes: dict[int, list[float]] = {}
        self.max_ts = -math.inf
        self.closed_through: int | None = None  # time mode: every pane <= this is closed
        self.cur_id = 0  # capped mode: the open window
        self.cur_start_ts: float | None = None
        self.cur_n = 0
        self._capped_closed: list[int] = []

    # -- assignment ------------------------------------------------------------------------------

    def assign(self, ts: np.ndarray) -> Assignment:
        """Assign a batch (event times, float epoch seconds) to panes; report closed windows."""
        ts = np.asarray(ts, dtype=np.float64)
        n = len(ts)
        index = np.arange(self.n_seen, self.n_seen + n, dtype=np.int64)
        mode = self.spec.mode
        if mode == "count":
            pane_ids = index // int(self.spec.pane)
            keep = np.ones(n, dtype=bool)
        elif mode == "time":
            finite = np.isfinite(ts)
            pane_ids = np.zeros(n, dtype=np.int64)
            pane_ids[finite] = np.floor(ts[finite] / self.spec.pane).astype(np.int64)
            keep = finite if self.closed_through is None else finite & (pane_ids > self.closed_through)
        else:
            pane_ids, keep = self._assign_capped(ts)
        self.n_late += int(n - np.count_nonzero(keep))
        self.n_seen += n

        kept_ids = pane_ids[keep]
        if kept_ids.size:
            panes, inverse = self._record(kept_ids, ts[keep], index[keep])
        else:
            panes, inverse = _EMPTY_I64, _EMPTY_I64
        result = Assignment(keep=keep, panes=panes, inverse=inverse)
        if mode == "count":
            self._close_count(result, self.n_seen - n)
        elif mode == "time":
            if np.isfinite(ts).any():
                self.max_ts = max(self.max_ts, float(np.nanmax(ts)))
            self._close_time(result)
        else:
            self._close_capped(result)
        for p in result.evict:
            self.panes.pop(p, None)
        return result

    def _record(self, ids: np.ndarray, ts: np.ndarray, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if (ids == ids[0]).all():
            panes = ids[:1]
            inverse = np.zeros(ids.size, dtype=np.int64)
            groups = [(int(ids[0]), ts, index)]
        else:
            panes, inverse = np.unique(ids, return_inverse=True)
            order = np.argsort(inverse, kind="stable")
            bounds = np.searchsorted(inverse[order], np.arange(panes.size + 1))
            groups = [
                (int(p), ts[order[bounds[j] : bounds[j + 1]]], index[order[bounds[j] : bounds[j + 1]]])
                for j, p in enumerate(panes.tolist())
            ]
        for p, t, idx in groups:
            finite = t[np.isfinite(t)]
            lo = float(finite.min()) if finite.size else math.inf
            hi = float(finite.max()) if finite.size else -math.inf
            stats = self.panes.get(p)
            if stats is None:
                self.panes[p] = [float(t.size), lo, hi, float(idx.min()), float(idx.max())]
            else:
                stats[0] += t.size
                stats[1] = min(stats[1], lo)
                stats[2] = max(stats[2], hi)
                stats[3] = min(stats[3], float(idx.min()))
                stats[4] = max(stats[4], float(idx.max()))
        return panes.astype(np.int64, copy=False), inverse.astype(np.int64, copy=False)

    def _window(
        self, panes: list[int], start_ts: float | None = None, end_ts: float | None = None
    ) -> ClosedWindow:
        stats = [self.panes[p] for p in panes if p in self.panes]
        lo_ts = min(s[1] for s in stats)
        hi_ts = max(s[2] for s in stats)
        return ClosedWindow(
            panes=tuple(p for p in panes if p in self.panes),
            start_ts=lo_ts if start_ts is None else start_ts,
            end_ts=hi_ts if end_ts is None else end_ts,
            start_index=int(min(s[3] for s in stats)),
            end_index=int(max(s[4] for s in stats)) + 1,
            n=int(sum(s[0] for s in stats)),
        )

    def _close_count(self, result: Assignment, before: int) -> None:
        step = int(self.spec.pane)
        m = self.spec.panes_per_window
        for p in range(before // step, self.n_seen // step):
            if p >= m - 1:
                result.closed.append(self._window(list(range(p - m + 1, p + 1))))
                result.evict.append(p - m + 1)

    def _close_time(self, result: Assignment) -> None:
        if not math.isfinite(self.max_ts):
            return
        step = self.spec.pane
        m = self.spec.panes_per_window
        watermark = self.max_ts - self.spec.allowed_lateness
        through = math.floor(watermark / step) - 1
        if self.closed_through is not None and through <= self.closed_through:
            return
        done = self.closed_through
        for p in sorted(q for q in self.panes if q <= through and (done is None or q > done)):
            result.closed.append(
                self._window(list(range(p - m + 1, p + 1)), (p - m + 1) * step, (p + 1) * step)
            )
        self.closed_through = through
        result.evict.extend(sorted(q for q in self.panes if q <= through - m + 1))

    def _assign_capped(self, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        size, seconds = int(self.spec.size or 1), float(self.spec.seconds or 0.0)
        n = len(ts)
        ids = np.empty(n, dtype=np.int64)
        keep = np.isfinite(ts)
        positions = np.flatnonzero(keep)
        k = 0
        while k < positions.size:
            if self.cur_start_ts is None:
                self.cur_start_ts = float(ts[positions[k]])
                self.cur_n = 0
            room = size - self.cur_n
            seg = positions[k : k + room]
            over = ts[seg] >= self.cur_start_ts + seconds
            j = int(np.argmax(over)) if over.any() else seg.size
            ids[seg[:j]] = self.cur_id
            self.cur_n += j
            k += j
            if self.cur_n >= size or j < seg.size:
                if self.cur_n:
                    self._capped_closed.append(self.cur_id)
                    self.cur_id += 1
                self.cur_start_ts = None
                self.cur_n = 0
        return ids, keep

    def _close_capped(self, result: Assignment) -> None:
        for p in self._capped_closed:
            result.closed.append(self._window([p]))
            result.evict.append(p)
        self._capped_closed = []

    # -- checkpoint ------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """JSON-able state."""
        return {
            "spec": self.spec.model_dump(),
            "n_seen": self.n_seen,
            "n_late": self.n_late,
            "panes": {str(p): [_num(v) for v in s] for p, s in self.panes.items()},
            "max_ts": _num(self.max_ts),
            "closed_through": self.closed_through,
            "cur_id": self.cur_id,
            "cur_start_ts": self.cur_start_ts,
            "cur_n": self.cur_n,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Windower:
        w = cls(WindowSpec.model_validate(state["spec"]))
        w.n_seen = int(state["n_seen"])
        w.n_late = int(state["n_late"])
        w.panes = {int(p): [_unnum(v) for v in s] for p, s in state["panes"].items()}
        w.max_ts = _unnum(state["max_ts"])
        w.closed_through = state["closed_through"]
        w.cur_id = int(state["cur_id"])
        w.cur_start_ts = state["cur_start_ts"]
        w.cur_n = int(state["cur_n"])
        return w


def _num(x: float) -> float | str:
    """A float for JSON: +-inf as strings (JSON has no infinity)."""
    return x if math.isfinite(x) else ("inf" if x > 0 else "-inf")


def _unnum(x: float | str) -> float:
    return float(x)
