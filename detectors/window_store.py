"""Drift windows merged across workers in Redis: results independent of the partition assignment.

The in-process `detectors.monitor.ModelMonitor` counts the events *one* worker sees, so its
windows change with the partition assignment. `WindowStore` instead defines windows by **event
time** - tumbling, ``window_seconds`` long, aligned to the epoch (``[k*W, (k+1)*W)``) - and adds
every worker's bin counts into the same Redis hash, so a window holds the same events whatever
worker consumed them, and its PSI is the same.

Keys, under a namespace ``<ns>`` (``<f>`` is the feature name, percent-escaped; ``<ws>`` the
window start in epoch seconds; ``<m>:<v>`` the model and version):

==============================================  ======================================================
``<ns>:drift:<m>:<v>:<f>:<ws>``                 hash: bin index -> events (HINCRBY), the missing bin
                                                included (`detectors.reference.Binning` layout)
``<ns>:drift:<m>:<v>:<f>:<ws>:sample``          sorted set: bounded sample of the window's values,
                                                for KS (numeric features; see below)
``<ns>:drift:<m>:<v>:~partitions``              hash: ``o:<p>`` last offset added, ``t:<p>`` max event
                                                time, ``s:<p>`` wall-clock time of the last batch
``<ns>:drift:<m>:<v>:~windows``                 sorted set of windows not closed yet (score = start)
``<ns>:drift:<m>:<v>:~offsets:<ws>``            hash: ``f:<p>`` / ``l:<p>`` first and last offset of
                                                partition ``p`` added to the window, ``n`` its events,
                                                ``last`` the start of the last window merged into it
                                                (absent: none; see *Minimum events*)
``<ns>:drift:<m>:<v>:~closed:<ws>``             closing marker (SET NX), JSON: ``owner`` (worker id /
                                                instance), ``state`` (pending, decided, published, or
                                                merged: moved ``into`` an earlier window), ``at``
                                                (claim time), a decided window's ``alerts``
``<ns>:drift:<m>:<v>:~pending``                 sorted set of windows claimed, not published (score =
                                                claim or takeover time)
``<ns>:drift:<m>:<v>:~outbox``                  hash: alert id -> ``{owner, at, alert}``, the alerts
                                                (and incident events)
                                                decided outside merged windows (ADWIN's), unpublished
==============================================  ======================================================

Every key expires ``ttl_seconds`` (default a day) after its last write.

**Adding** (`WindowStore.add`): one Lua script call per batch - one round trip for all features and
partitions - which checks each partition's stored offset against the one the worker last saw
(compare-and-set), adds the counts and samples of windows not closed yet (events for a closed
window are *late*: dropped and counted), then stores each partition's new offset and max event
time, and per window and partition the first offset added (HSETNX) and the last one (HSET: a
partition's fresh offsets are above all it added before) - the signals' ``window_offsets`` - and
the window's event count ``n`` (HINCRBY).
Events at offsets at or below a partition's stored offset were already added (a replay after a
crash or rebalance) and are skipped, so counts are exact under at-least-once delivery. If
another worker moved a partition's offset meanwhile (a rebalance), the script changes nothing, the
worker re-reads the offsets and retries. After its writes the script also returns what
`close_ready` reads first (the partitions hash, the open and pending windows, the outbox), so a
batch's add and the start of its close share one round trip.

**Closing** (`WindowStore.close_ready`): the combined watermark is the minimum, over the
partitions, of each one's max event time (``partitions`` = the topic's partitions; a partition not
seen yet holds every window open; with ``idle_timeout_seconds``, partitions with no batch for that
long - or never seen, once the first batch of any partition is that old - are left out). A
window ``[ws, ws + W)`` is due when the watermark reaches
``ws + W + allowed_lateness``. The first worker to ``SET NX`` its closing marker closes it - the
decision is taken exactly once: any later increment for that window is rejected as late by the
script, so the counts it reads are final - computes PSI, the missing rate and KS on the merged data
and returns the signals. The signals' ``window_start_index`` / ``window_end_index`` are the window
number ``k`` and ``k + 1`` (there is no global event counter across workers).

**Minimum events** (``min_window_events``, default 1 here, 500 in the worker's `DriftConfig`): a
window also waits for that many events, so a low-rate stream - one event every 5 minutes, a
300 s window holding ~1 - still gets PSI/KS/missing-rate windows big enough to mean something.
The close is one Lua script (no round trip between deciding and merging; it re-reads the open
windows up to the newest due one itself, and builds the data keys from the version's prefix).
Oldest first, a due window with ``n >= min_window_events`` is claimed as above. One with fewer
becomes the *head* of a merged window: every later due window is **moved into the head** -
its bin counts added (HINCRBY, the missing bin included, so the missing rate and every
category's count merge exactly), its KS sample unioned with the head's and trimmed to the
``ks_sample_size`` smallest keys (the bottom-k of a union is the bottom-k of the bottom-k's: still
a uniform sample of the whole span), its first/last offsets folded in (min/max per partition),
``n`` summed, ``last`` set - its keys deleted and its marker set to ``{"state": "merged", "into":
<head>}``, so its late events are dropped and counted as for any closed window. The head is
claimed the moment ``n`` reaches the minimum; its signals and statistics report the whole span:
``window_start_ts`` the head's start, ``window_end_ts`` the end of the last window merged
(``window_end_index`` that window's number + 1), ``n_window`` all its events. The head keeps its
own key and start, so claiming, deciding, takeover and publishing work on it unchanged, and a
takeover evaluates the same span again. Each event is in one window: each merged window is
decided once however many workers close. The head itself stays open until then: a late event in
its own ``W`` seconds is still counted (not late), and an event for an *empty* window inside its
span opens that window, which the next close moves into the head. **A stream that stops** with
its newest windows under the minimum leaves them open - undecided, their events kept, expiring
with the TTL - until more events arrive; an idle model version's last partial window is never
evaluated. (Likewise, an event for an empty window older than windows already closed opens it
as a new head, whose span then overlaps theirs; with ``min_window_events <= 1`` such a window
closes alone, as it always did.) Cost: while a head waits, every batch's close runs the script
(one round trip); on a stream with ~1 event per window, adding and merging cost ~80-160 ms per
500-event batch (each event creates its window's ~17 keys), against ~5 ms on a 2 events/s stream.

**Publishing is at least once** - a worker killed (SIGKILL) anywhere between claiming a window
and committing the batch that carries its alerts loses none of them:

1. *claim*: one script sets the marker ``{owner, state: "pending", at}`` (NX) and adds the window
   to ``~pending``; the window is in this instance's ``inflight``;
2. *decide*: the shared alert policy (`detectors.policy_store.SharedAlertPolicy`) decides on the
   signals and, in the same ``MULTI`` as its own state, `record_decision` stores each window's
   alerts in its marker (``state: "decided"``; a window without alerts stays "pending") and the
   batch's other alerts - ADWIN's, per partition - in ``~outbox``;
3. the worker produces the alerts with the batch's other outputs and commits the batch (its Kafka
   transaction, or flush + offset commit);
4. *published*: only then does `mark_published` set ``state: "published"`` and drop the windows
   from ``~pending`` - those the instance still owns (compare-and-set on the owner) - and its
   alerts from ``~outbox``.

Every `close_ready` also reads ``~pending`` (in its first round trip: free while it is empty, as
it is between batches) and takes over a close - compare-and-set on the marker - whose claim or
last takeover is ``close_timeout_seconds`` old, whose owner is this worker id's previous instance
(a restart with the same ``worker_id`` takes its windows back at once) or this instance itself
after `abandon` (a batch whose outputs failed and is redone). A "pending" window is evaluated
again from its final counts (same signals, decided now for the first time); a "decided" one
gives its stored alerts in ``recovered``, to be produced as they are, without asking the policy
again; so does an outbox entry, by the same rules (an ADWIN that re-detects the change on the
replayed events finds its alert's id emitted, and the outbox publishes it). So the policy counts
each alert once and never drops one as a duplicate of itself that was never produced. The alert
ids are deterministic, so a close re-published after its alerts did go out (a kill between the
commit and step 4, or an owner slower than the timeout, whose step 4 then leaves the close to
the worker that took it over) repeats alerts with the same ids, which consumers drop. The cost
is one more Redis call per batch that closed a window or alerted, after its commit.

**KS on merged windows** is approximate: a window's full list of values would not fit the hot path,
so each numeric feature keeps a **bottom-k sample**: every event gets a pseudo-random key
``u = hash(partition, offset)`` in [0, 1); events with ``u < ks_sample_rate`` are sent (ZADD, score
``u``) and the sorted set is trimmed to the ``ks_sample_size`` smallest keys. That is a uniform
random sample of the window without replacement, the same whichever worker saw which event (and
idempotent under replays: same member, same score). KS and its p-value are computed on that
sample (``n`` = its size), so KS loses power on large windows but stays calibrated; PSI and the
missing rate use the exact merged counts. Pick ``ks_sample_rate`` around ``2 * ks_sample_size /
events per window`` (1.0 sends every value: exact KS on windows smaller than ``ks_sample_size``).

Cost, measured on the CI box against a local Redis, 12 numeric + 2 categorical features + score,
batches of 1000 events over 6 partitions: `add` + `close_ready` take 2.8 ms per batch without
KS sampling (~360k events/s per worker), 7.7 ms with the default 5% sampling (~130k events/s;
about 650 sampled values per batch), 16 ms at 20%. Closing a window costs ~1 ms more, once.

Every key of a version carries the hash tag ``{<ns>:drift:<m>:<v>}`` (`drift_prefix`;
written ``<ns>:drift:<m>:<v>`` in the table above for short), so on a Redis Cluster each Lua
script and the shared policy's transaction touch one slot (the close script builds its data keys
from that prefix, undeclared: allowed because they hash to its declared keys' slot). The client
may be a single Redis or a cluster (``redis.cluster.RedisCluster``) and may return bytes or str.
"""

from __future__ import annotations

import functools
import json
import math
import os
import signal
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import numpy as np
import orjson
import redis
from redis.cluster import RedisCluster

from detectors.alerts import DriftAlert
from detectors.base import Evaluation
from detectors.incidents import DriftOutput, parse_output
from detectors.ks import KSWindow, benjamini_hochberg
from detectors.missing import MissingRate
from detectors.monitor import MonitorConfig
from detectors.psi import PSIWindow
from detectors.reference import Reference, as_float
from detectors.signals import SCORE_FEATURE, DriftSignal, WindowStat
from detectors.windowing import ClosedWindow

_MAX_ATTEMPTS = 20
WINDOWED_DETECTORS = frozenset({"psi", "ks", "missing_rate"})
"""The detectors whose signals come from merged windows (and whose alerts a closing marker keeps)."""

FAULT_ENV = "DRIFTLINE_FAULT_INJECT"
"""Fault injection for tests: SIGKILL the process at the `fault_point` this variable names."""


def drift_prefix(namespace: str, model: str, version: int) -> str:
    """The hash tag every key of one model version's drift state starts with (braces included),
    here and in the drift stage's own keys: a Redis Cluster keeps the version on one slot
    (`driftline.redis_keys` has the whole layout).

    >>> drift_prefix("dl", "fraud", 2)
    '{dl:drift:fraud:2}'
    """
    return f"{{{namespace}:drift:{model}:{version}}}"


def fault_point(name: str) -> None:
    """Kill this process (SIGKILL, no cleanup) if ``$DRIFTLINE_FAULT_INJECT`` is `name` (tests only)."""
    if os.environ.get(FAULT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


# Close the due windows (start <= ARGV[4]), oldest first, in one atomic step. A window holding at
# least ARGV[5] events (field ``n`` of its offsets hash) is claimed: SET NX its closing marker
# and add it to the pending set, so no claimed window can be missing from it. A window under the
# minimum becomes the *head* of a merged window: every later due window is moved into it (bin
# counts HINCRBY, KS samples unioned and trimmed to the bottom ARGV[6], offsets min/max, ``n``
# summed, ``last`` = the last window merged) and gets a "merged" marker, so its late events are
# dropped; the head is claimed as soon as it reaches the minimum, else it stays open. The data
# keys are built here (ARGV[7] the version's prefix, ARGV[8] the escaped features and which have
# a KS sample): which windows merge is only known inside the script.
_CLOSE_LUA = """
local pfx, minn, ttl = ARGV[7], tonumber(ARGV[5]), ARGV[3]
local feats = cjson.decode(ARGV[8])
local function okey(ws) return pfx .. ':~offsets:' .. ws end
local function ckey(ws) return pfx .. ':~closed:' .. ws end
local won = {}
local head, head_n = nil, 0
for _, ws in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[4])) do
  if redis.call('EXISTS', ckey(ws)) == 1 then
    redis.call('ZREM', KEYS[2], ws)
  elseif head == nil then
    head = ws
    head_n = tonumber(redis.call('HGET', okey(ws), 'n')) or 0
  else
    for _, f in ipairs(feats) do
      local src, dst = pfx .. ':' .. f[1] .. ':' .. ws, pfx .. ':' .. f[1] .. ':' .. head
      local h = redis.call('HGETALL', src)
      for i = 1, #h, 2 do redis.call('HINCRBY', dst, h[i], h[i + 1]) end
      if #h > 0 then redis.call('DEL', src) end
      redis.call('EXPIRE', dst, ttl)  -- a head can wait long: keep all of it alive while it grows
      if f[2] == 1 then
        local ss, ds = src .. ':sample', dst .. ':sample'
        if redis.call('EXISTS', ss) == 1 then
          redis.call('ZUNIONSTORE', ds, 2, ds, ss, 'AGGREGATE', 'MIN')
          redis.call('ZREMRANGEBYRANK', ds, ARGV[6], -1)
          redis.call('DEL', ss)
        end
        redis.call('EXPIRE', ds, ttl)
      end
    end
    local hk = okey(head)
    local o = redis.call('HGETALL', okey(ws))
    local last = ws
    for i = 1, #o, 2 do
      local k, v = o[i], o[i + 1]
      local kind = string.sub(k, 1, 2)
      if k == 'n' then
        head_n = head_n + tonumber(v)
        redis.call('HINCRBY', hk, 'n', v)
      elseif k == 'last' then
        if tonumber(v) > tonumber(last) then last = v end
      elseif kind == 'f:' or kind == 'l:' then
        local cur = tonumber(redis.call('HGET', hk, k))
        local x = tonumber(v)
        if (not cur) or (kind == 'f:' and x < cur) or (kind == 'l:' and x > cur) then
          redis.call('HSET', hk, k, v)
        end
      end
    end
    local hl = redis.call('HGET', hk, 'last')
    if (not hl) or tonumber(last) > tonumber(hl) then redis.call('HSET', hk, 'last', last) end
    redis.call('EXPIRE', hk, ttl)
    redis.call('DEL', okey(ws))
    local marker = {owner = ARGV[9], state = 'merged', into = tonumber(head), at = tonumber(ARGV[2])}
    redis.call('SET', ckey(ws), cjson.encode(marker), 'EX', ttl)
    redis.call('ZREM', KEYS[2], ws)
  end
  if head ~= nil and (minn <= 1 or head_n >= minn) then
    if redis.call('SET', ckey(head), ARGV[1], 'NX', 'EX', ttl) then
      redis.call('ZADD', KEYS[1], ARGV[2], head)
      won[#won + 1] = head
    end
    redis.call('ZREM', KEYS[2], head)
    head = nil
  end
end
if #won > 0 then redis.call('EXPIRE', KEYS[1], ttl) end
return won
"""

# Mark closes published - only those this instance still owns (a close another worker took over
# meanwhile is left to it, pending); a marker gone (expired) just leaves the pending set.
_PUBLISH_LUA = """
for i = 2, #KEYS do
  local raw = redis.call('GET', KEYS[i])
  local mine = false
  if raw then
    local ok, m = pcall(cjson.decode, raw)
    mine = ok and type(m) == 'table' and m['owner'] == ARGV[1]
    if mine then redis.call('SET', KEYS[i], ARGV[2 * i - 2], 'KEEPTTL') end
  end
  if mine or not raw then redis.call('ZREM', KEYS[1], ARGV[2 * i - 1]) end
end
return 1
"""

# Take an outbox entry over: compare-and-set on its whole value.
_TAKEOVER_ALERT_LUA = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
"""

# Take a pending close over: compare-and-set on the marker's whole value.
_TAKEOVER_LUA = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
return 1
"""

_ADD_LUA = """
local doc = cjson.decode(ARGV[1])
for _, p in ipairs(doc.parts) do
  local cur = redis.call('HGET', KEYS[1], 'o:' .. p[1])
  if not cur then cur = '-1' end
  if cur ~= p[2] then return {'conflict', p[1]} end
end
local ttl = tonumber(doc.ttl)
local open = {}
local late = 0
for i, ws in ipairs(doc.windows) do
  if redis.call('EXISTS', KEYS[2 + i]) == 0 then
    open[i] = true
    redis.call('ZADD', KEYS[2], ws, ws)
  else
    open[i] = false
    late = late + tonumber(doc.nwin[i])
  end
end
local touched = {}
for _, it in ipairs(doc.incr) do
  if open[it[2]] then
    redis.call('HINCRBY', KEYS[it[1]], it[3], it[4])
    touched[it[1]] = 'h'
  end
end
for _, it in ipairs(doc.zadd) do
  if open[it[2]] then
    for i = 3, #it, 1000 do
      redis.call('ZADD', KEYS[it[1]], unpack(it, i, math.min(i + 999, #it)))
    end
    touched[it[1]] = 'z'
  end
end
for _, it in ipairs(doc.offs) do
  if open[it[2]] then
    redis.call('HSETNX', KEYS[it[1]], 'f:' .. it[3], it[4])
    redis.call('HSET', KEYS[it[1]], 'l:' .. it[3], it[5])
    touched[it[1]] = 'h'
  end
end
for i, okey in ipairs(doc.okeys) do
  if open[i] then redis.call('HINCRBY', KEYS[okey], 'n', doc.nwin[i]) end
end
for k, kind in pairs(touched) do
  if kind == 'z' then redis.call('ZREMRANGEBYRANK', KEYS[k], doc.k, -1) end
  redis.call('EXPIRE', KEYS[k], ttl)
end
for _, p in ipairs(doc.parts) do
  redis.call('HSETNX', KEYS[1], 'first', p[5])
  redis.call('HSET', KEYS[1], 'o:' .. p[1], p[3], 's:' .. p[1], p[5])
  if p[4] ~= '' then
    local t = redis.call('HGET', KEYS[1], 't:' .. p[1])
    if (not t) or tonumber(t) < tonumber(p[4]) then redis.call('HSET', KEYS[1], 't:' .. p[1], p[4]) end
  end
end
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('EXPIRE', KEYS[2], ttl)
-- What close_ready reads first, read here so that a batch's add and close share a round trip.
return {'ok', tostring(late), redis.call('HGETALL', KEYS[1]), redis.call('ZRANGE', KEYS[2], 0, -1),
        redis.call('ZRANGE', KEYS[tonumber(ARGV[2])], 0, -1), redis.call('HGETALL', KEYS[tonumber(ARGV[3])])}
"""


@dataclass(frozen=True)
class AddResult:
    """What one `WindowStore.add` did: events added, skipped as already added, dropped as late."""

    added: int
    replayed: int
    late: int
    attempts: int


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


def _window_offsets(raw: Mapping[Any, Any]) -> dict[int, tuple[int, int]]:
    """``{f:<p>: first, l:<p>: last}`` (the offsets hash of a window) -> ``{p: (first, last)}``."""
    fields = {key: int(_text(v)) for k, v in raw.items() if (key := _text(k)).startswith(("f:", "l:"))}
    return {
        int(k[2:]): (v, fields.get(f"l:{k[2:]}", v))
        for k, v in sorted(fields.items(), key=lambda kv: int(kv[0][2:]))
        if k.startswith("f:")
    }


def _window_end(raw: Mapping[Any, Any], ws: float, window_seconds: float) -> float:
    """The end of window `ws` from its offsets hash: that of the last window merged into it, if any."""
    last = next((_text(v) for k, v in raw.items() if _text(k) == "last"), None)
    return (ws if last is None else float(last)) + window_seconds


def _pairs(flat: Sequence[Any]) -> dict[Any, Any]:
    """A Lua ``HGETALL`` reply (field, value, field, value, ...) as a dict."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _parse_marker(raw: bytes | str | None) -> dict[str, Any] | None:
    """A closing marker's JSON (None if absent); a plain worker id (older markers) reads as published."""
    if raw is None:
        return None
    text = _text(raw)
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        return {"owner": text, "state": "published", "at": 0.0}
    return doc


def _ts_text(ws: float) -> str:
    return str(int(ws)) if float(ws).is_integer() else repr(float(ws))


def sample_keys(partitions: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Pseudo-random key in [0, 1) of each (partition, offset): splitmix64, stable across processes.

    >>> k = sample_keys(np.array([0, 0, 1]), np.array([7, 8, 7]))
    >>> bool(((k >= 0) & (k < 1)).all()), len(set(k.tolist()))
    (True, 3)
    >>> float(sample_keys(np.array([0]), np.array([7]))[0]) == float(k[0])  # the same in every process
    True
    """
    x = (np.asarray(partitions).astype(np.uint64) << np.uint64(48)) ^ np.asarray(offsets).astype(np.uint64)
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    x = x ^ (x >> np.uint64(31))
    keys: np.ndarray = (x >> np.uint64(11)).astype(np.float64) * 2.0**-53
    return keys


class WindowStore:
    """Event-time windows of one model version's features, merged across workers in Redis."""

    def __init__(
        self,
        client: redis.Redis | RedisCluster,
        namespace: str,
        model: str,
        version: int,
        references: Mapping[str, Reference],
        score_reference: Reference | None = None,
        window_seconds: float = 60.0,
        allowed_lateness: float = 10.0,
        partitions: Iterable[int] | None = None,
        idle_timeout_seconds: float | None = None,
        ttl_seconds: int = 86_400,
        ks_sample_size: int = 2000,
        ks_sample_rate: float = 0.05,
        config: MonitorConfig | None = None,
        worker_id: str | None = None,
        close_timeout_seconds: float = 60.0,
        min_window_events: int = 1,
    ) -> None:
        if window_seconds <= 0 or allowed_lateness < 0:
            raise ValueError("window_seconds must be > 0 and allowed_lateness >= 0")
        if not 0.0 <= ks_sample_rate <= 1.0:
            raise ValueError(f"ks_sample_rate must be in [0, 1], got {ks_sample_rate}")
        self.r = client
        self.namespace, self.model, self.version = namespace, model, version
        self.window_seconds = float(window_seconds)
        self.allowed_lateness = float(allowed_lateness)
        self.partitions = None if partitions is None else sorted({int(p) for p in partitions})
        self.idle_timeout_seconds = idle_timeout_seconds
        self.ttl_seconds = int(ttl_seconds)
        self.ks_sample_size = int(ks_sample_size)
        self.ks_sample_rate = float(ks_sample_rate)
        self.worker_id = worker_id or uuid.uuid4().hex[:12]
        self.owner = f"{self.worker_id}/{uuid.uuid4().hex[:8]}"
        """Closing markers' owner: the worker id and this instance (a restart is another owner)."""
        if close_timeout_seconds <= 0:
            raise ValueError("close_timeout_seconds must be > 0")
        self.close_timeout_seconds = float(close_timeout_seconds)
        self.min_window_events = max(int(min_window_events), 1)
        """A due window under this many events merges the next ones in before it is evaluated."""
        cfg = config or MonitorConfig()
        self.config = cfg
        refs = dict(references)
        if score_reference is not None:
            refs[SCORE_FEATURE] = score_reference
        self.references = refs
        win: dict[str, Any] = {"window_seconds": self.window_seconds, "min_count": cfg.min_count}
        self._psi = {
            f: PSIWindow(
                ref,
                f,
                warning=cfg.psi_warning,
                critical=cfg.psi_critical,
                alpha=cfg.psi_alpha,
                eps=cfg.eps,
                n_bins=cfg.n_bins,
                **win,
            )
            for f, ref in refs.items()
        }
        self._missing = {
            f: MissingRate(
                ref,
                f,
                alpha=cfg.missing_alpha,
                warning_increase=cfg.missing_warning,
                critical_increase=cfg.missing_critical,
                **win,
            )
            for f, ref in refs.items()
            if cfg.missing and f != SCORE_FEATURE
        }
        self._ks = {
            f: KSWindow(
                ref,
                f,
                alpha=cfg.ks_alpha,
                warning_effect=cfg.ks_warning_effect,
                critical_effect=cfg.ks_critical_effect,
                **win,
            )
            for f, ref in refs.items()
            if cfg.ks and ks_sample_rate > 0 and ref.kind == "numeric" and len(ref.sample) >= 2
        }
        self._prefix = drift_prefix(namespace, model, version)
        self._offsets: dict[int, int] = {}  # partition -> last offset stored (as this worker last saw it)
        self._script = self.r.register_script(_ADD_LUA)
        self._close = self.r.register_script(_CLOSE_LUA)
        # The close script's per-feature data keys: the escaped name, and 1 if it has a KS sample.
        self._close_features = json.dumps(
            [[self._escaped(f), int(f in self._ks)] for f in self._psi], separators=(",", ":")
        )
        self._takeover = self.r.register_script(_TAKEOVER_LUA)
        self._publish = self.r.register_script(_PUBLISH_LUA)
        self._takeover_alert = self.r.register_script(_TAKEOVER_ALERT_LUA)
        self._now = time.time()  # of the last `close_ready`: the clock of claims and the outbox
        # What the last `add` read back for the next `close_ready` (partitions, windows, pending, outbox).
        self._read_ahead: list[Any] | None = None
        self.windows: list[WindowStat] = []
        self.bins: dict[str, dict[str, Any]] = {}
        """Per feature, the last window the latest `close_ready` evaluated, as PSI binned it: bin
        ``labels``, ``reference`` proportions, the window's ``counts`` and its span (for reports)."""
        """`WindowStat` of every window evaluated by the last `close_ready`."""
        self.inflight: dict[float, float] = {}
        """Windows this instance closed (or took over) and not yet published: start -> claim time."""
        self.outbox: set[str] = set()
        """Ids of the alerts in the outbox this instance recorded (or took over), not yet published."""
        self.recovered: list[DriftOutput] = []
        """Alerts of windows taken over by the last `close_ready` that had been decided but never
        published: the worker produces them again as they are (same ids), without a new decision."""

    # -- keys ------------------------------------------------------------------------------------

    @staticmethod
    @functools.cache
    def _escaped(feature: str) -> str:
        return quote(feature, safe="").replace("~", "%7E")  # cached: once per key of every batch

    def feature_key(self, feature: str, window_start: float) -> str:
        """``<ns>:drift:<model>:<version>:<feature>:<window_start>``."""
        return f"{self._prefix}:{self._escaped(feature)}:{_ts_text(window_start)}"

    @property
    def partitions_key(self) -> str:
        return f"{self._prefix}:~partitions"

    @property
    def windows_key(self) -> str:
        return f"{self._prefix}:~windows"

    def offsets_key(self, window_start: float) -> str:
        """``<ns>:drift:<model>:<version>:~offsets:<window_start>``: first/last offset per partition."""
        return f"{self._prefix}:~offsets:{_ts_text(window_start)}"

    def closed_key(self, window_start: float) -> str:
        return f"{self._prefix}:~closed:{_ts_text(window_start)}"

    @property
    def outbox_key(self) -> str:
        """Hash: alert id -> the alerts decided outside merged windows (ADWIN's), not yet published."""
        return f"{self._prefix}:~outbox"

    @property
    def pending_key(self) -> str:
        """Sorted set of windows claimed but not published yet (score = claim or takeover time)."""
        return f"{self._prefix}:~pending"

    def marker(self, window_start: float) -> dict[str, Any] | None:
        """A window's closing marker (owner, state, claim time; a decided one's alerts), None if open."""
        return _parse_marker(self.r.get(self.closed_key(window_start)))

    def _marker_value(self, state: str, at: float, alerts: Sequence[DriftAlert] = ()) -> str:
        doc: dict[str, Any] = {"owner": self.owner, "state": state, "at": at}
        if alerts:
            doc["alerts"] = [a.model_dump(mode="json") for a in alerts]
        return json.dumps(doc, separators=(",", ":"))

    def window_start(self, ts: float) -> float:
        """Start of the window holding event time `ts`."""
        return math.floor(ts / self.window_seconds) * self.window_seconds

    # -- adding ----------------------------------------------------------------------------------

    def add(
        self,
        columns: Mapping[str, np.ndarray],
        ts: np.ndarray,
        partitions: np.ndarray | int,
        offsets: np.ndarray,
        scores: np.ndarray | None = None,
        now: float | None = None,
        counted: Mapping[str, np.ndarray] | None = None,
    ) -> AddResult:
        """Add a batch: feature columns (absent = missing), event times, each event's partition and offset.

        Events at offsets already added for their partition are skipped; events for closed
        windows are dropped as late; events without a finite time are dropped too (counted late).
        `counted`: per feature (the score: `SCORE_FEATURE`), a boolean mask of the events its
        detectors count (default all): an event not scored still advances the offsets and the
        watermark, and counts only for the features it is masked in for.
        """
        ts = np.asarray(ts, dtype=np.float64)
        n = ts.size
        if isinstance(partitions, int | np.integer):
            part = np.full(n, int(partitions), dtype=np.int64)
        else:
            part = np.asarray(partitions).astype(np.int64, copy=False)
        offs = np.asarray(offsets).astype(np.int64, copy=False)
        if part.shape != ts.shape or offs.shape != ts.shape:
            raise ValueError(f"{n} timestamps but {part.size} partitions and {offs.size} offsets")
        cols = dict(columns)
        if scores is not None:
            cols[SCORE_FEATURE] = scores
        for f, col in cols.items():
            if f in self.references and np.shape(col)[:1] != ts.shape:
                raise ValueError(f"{f}: {len(col)} values but {n} timestamps")
        now = time.time() if now is None else now
        uniq = np.unique(part).tolist()
        for attempt in range(1, _MAX_ATTEMPTS + 1):
            unknown = [p for p in uniq if p not in self._offsets]
            if unknown:
                self._refresh_offsets(unknown)
            stored = np.array([self._offsets[p] for p in uniq], dtype=np.int64)
            fresh = offs > stored[np.searchsorted(uniq, part)]
            n_fresh = int(np.count_nonzero(fresh))
            if n_fresh == 0:
                self._read_ahead = None  # nothing sent: close_ready reads for itself
                return AddResult(added=0, replayed=n, late=0, attempts=attempt)
            keys, doc, new_offsets, bad_ts = self._plan(cols, ts, part, offs, fresh, now, counted or {})
            keys += [self.pending_key, self.outbox_key]  # read back for close_ready (Lua is 1-based)
            reply = self._script(keys=keys, args=[orjson.dumps(doc), str(len(keys) - 1), str(len(keys))])
            if _text(reply[0]) == "conflict":
                self._offsets.pop(int(_text(reply[1])), None)
                continue
            self._offsets.update(new_offsets)
            self._read_ahead = [_pairs(reply[2]), reply[3], reply[4], _pairs(reply[5])]
            late = int(_text(reply[1])) + bad_ts
            return AddResult(added=n_fresh - late, replayed=n - n_fresh, late=late, attempts=attempt)
        raise RuntimeError(f"gave up adding a batch to {self._prefix}: partition offsets kept changing")

    def _refresh_offsets(self, partitions: list[int]) -> None:
        values = self.r.hmget(self.partitions_key, [f"o:{p}" for p in partitions])
        for p, v in zip(partitions, values, strict=True):
            self._offsets[p] = int(_text(v)) if v is not None else -1

    def _plan(
        self,
        cols: Mapping[str, np.ndarray],
        ts: np.ndarray,
        part: np.ndarray,
        offs: np.ndarray,
        fresh: np.ndarray,
        now: float,
        counted: Mapping[str, np.ndarray],
    ) -> tuple[list[str], dict[str, Any], dict[int, int], int]:
        parts = []
        new_offsets: dict[int, int] = {}
        good = fresh & np.isfinite(ts)
        for p in np.unique(part[fresh]).tolist():
            in_p = part == p
            top = int(offs[in_p].max())
            new_offsets[p] = top
            p_ts = ts[in_p & good]
            max_ts = repr(float(p_ts.max())) if p_ts.size else ""
            parts.append([str(p), str(self._offsets[p]), str(top), max_ts, repr(float(now))])
        sel = np.flatnonzero(good)
        t = ts[sel]
        k = np.floor(t / self.window_seconds).astype(np.int64)
        wins, wpos, nwin = np.unique(k, return_inverse=True, return_counts=True)
        window_starts = [float(w) * self.window_seconds for w in wins.tolist()]
        keys = [self.partitions_key, self.windows_key, *[self.closed_key(ws) for ws in window_starts]]
        key_index: dict[str, int] = {}

        def index_of(key: str) -> int:
            if key not in key_index:
                keys.append(key)
                key_index[key] = len(keys)  # Lua is 1-based
            return key_index[key]

        # Per window and partition, the first and last offset added: a partition's fresh offsets
        # are above every offset it added before, so the first is set once and the last overwritten.
        offs_doc: list[list[Any]] = []
        if sel.size:
            sel_p, sel_o = part[sel], offs[sel]
            n_p = int(sel_p.max()) + 1
            combo = wpos.astype(np.int64) * n_p + sel_p
            order = np.argsort(combo, kind="stable")
            uniq, first = np.unique(combo[order], return_index=True)
            lo = np.minimum.reduceat(sel_o[order], first).tolist()
            hi = np.maximum.reduceat(sel_o[order], first).tolist()
            for c, a, b in zip(uniq.tolist(), lo, hi, strict=True):
                w, p = divmod(c, n_p)
                offs_doc.append([index_of(self.offsets_key(window_starts[w])), w + 1, str(p), str(a), str(b)])
        incr: list[list[Any]] = []
        zadd: list[list[Any]] = []  # [key, window, score, member, score, member, ...]: one ZADD per key
        u = sample_keys(part[sel], offs[sel]) if self._ks else None
        sampled = (u < self.ks_sample_rate) if u is not None else None
        sel_part, sel_offs = part[sel].tolist(), offs[sel].tolist()
        for f, psi in self._psi.items():
            col = cols.get(f)
            values = np.full(sel.size, np.nan) if col is None else np.asarray(col)[sel]
            mask = counted.get(f)
            keep = np.ones(sel.size, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)[sel]
            nb = psi.binning.n_bins
            data_keys = [index_of(self.feature_key(f, ws)) for ws in window_starts]
            bins = wpos[keep] * nb + psi.binning.bin_indices(values[keep])
            combo, counts = np.unique(bins, return_counts=True)
            for c, cnt in zip(combo.tolist(), counts.tolist(), strict=True):
                w, b = divmod(c, nb)
                incr.append([data_keys[w], w + 1, str(b), cnt])
            if f in self._ks and sampled is not None and u is not None:
                x = as_float(values)
                take = np.flatnonzero(sampled & np.isfinite(x) & keep)
                if take.size == 0:
                    continue
                per_window: dict[int, list[Any]] = {}
                for i, w, score, v in zip(
                    take.tolist(), wpos[take].tolist(), u[take].tolist(), x[take].tolist(), strict=True
                ):
                    item = per_window.get(w)
                    if item is None:
                        key = index_of(self.feature_key(f, window_starts[w]) + ":sample")
                        item = per_window[w] = [key, w + 1]
                    item += [repr(score), f"{sel_part[i]}:{sel_offs[i]}:{v!r}"]
                zadd.extend(per_window.values())
        doc = {
            "parts": parts,
            "windows": [_ts_text(ws) for ws in window_starts],
            "nwin": [str(c) for c in nwin.tolist()],
            "incr": incr,
            "zadd": zadd,
            "offs": offs_doc,
            "okeys": [index_of(self.offsets_key(ws)) for ws in window_starts],
            "k": self.ks_sample_size,
            "ttl": self.ttl_seconds,
        }
        return keys, doc, new_offsets, int(np.count_nonzero(fresh & ~np.isfinite(ts)))

    # -- closing ---------------------------------------------------------------------------------

    def watermark(self, now: float | None = None) -> float:
        """The combined event-time watermark (-inf until every partition counted has reported)."""
        raw = self.r.hgetall(self.partitions_key)
        return self._watermark({_text(k): _text(v) for k, v in raw.items()}, now)

    def _watermark(self, fields: Mapping[str, str], now: float | None) -> float:
        seen = {int(k[2:]) for k in fields if k.startswith("t:")}
        expected = self.partitions if self.partitions is not None else sorted(seen)
        if not expected:
            return -math.inf
        if self.idle_timeout_seconds is not None:
            # Idle: no batch for the timeout; a partition never seen counts as idle only once the
            # first batch of any partition is that old (so a starting worker's first partitions
            # do not close windows the others still fill).
            now = time.time() if now is None else now
            first = float(fields.get("first", now))
            last = {p: float(fields[f"s:{p}"]) if p in seen else first for p in expected}
            active = [p for p in expected if now - last[p] <= self.idle_timeout_seconds]
            if active:
                expected = active
        if any(p not in seen for p in expected):
            return -math.inf
        return min(float(fields[f"t:{p}"]) for p in expected)

    def close_ready(self, now: float | None = None) -> list[DriftSignal]:
        """Close every due window this worker wins; return their drift signals (oldest first).

        Also takes over the pending closes of workers that died (or of this one's rewound
        batches): their signals are returned too, or, if their alerts had been decided already,
        those alerts are left in ``recovered``. Every window closed or taken over stays in
        ``inflight`` until `mark_published` (after the batch is committed) or `abandon`.
        """
        now = time.time() if now is None else now
        self._now = now
        if self._read_ahead is not None:  # read by this batch's `add`, after its writes
            raw_parts, raw_windows, raw_pending, raw_outbox = self._read_ahead
            self._read_ahead = None
        else:
            pipe = self.r.pipeline(transaction=False)
            pipe.hgetall(self.partitions_key)
            pipe.zrange(self.windows_key, 0, -1)
            pipe.zrange(self.pending_key, 0, -1)
            pipe.hgetall(self.outbox_key)
            raw_parts, raw_windows, raw_pending, raw_outbox = pipe.execute()
        wm = self._watermark({_text(k): _text(v) for k, v in raw_parts.items()}, now)
        self.windows = []
        self.bins = {}
        self.recovered = []
        starts = sorted(float(_text(w)) for w in raw_windows)
        due = [ws for ws in starts if ws + self.window_seconds + self.allowed_lateness <= wm]
        won: list[float] = []
        if due:
            # The script re-reads the open windows up to the newest due one itself: which windows
            # an under-minimum window merges must be decided on the current set, atomically.
            reply = self._close(
                keys=[self.pending_key, self.windows_key],
                args=[
                    self._marker_value("pending", now),
                    repr(float(now)),
                    str(self.ttl_seconds),
                    repr(float(max(due))),
                    str(self.min_window_events),
                    str(self.ks_sample_size),
                    self._prefix,
                    self._close_features,
                    self.owner,
                ],
            )
            won = [float(_text(w)) for w in reply]
        for ws in won:
            self.inflight[ws] = now
        orphans = sorted({float(_text(w)) for w in raw_pending} - set(self.inflight))
        evaluate = sorted(won + (self._take_over(orphans, now) if orphans else []))
        if raw_outbox:
            self._take_over_alerts(raw_outbox, now)
        if not evaluate:
            return []
        pipe = self.r.pipeline(transaction=False)
        for ws in evaluate:
            for f in self._psi:
                pipe.hgetall(self.feature_key(f, ws))
            for f in self._ks:
                pipe.zrange(self.feature_key(f, ws) + ":sample", 0, -1)
            pipe.hgetall(self.offsets_key(ws))
        replies = pipe.execute()
        signals: list[DriftSignal] = []
        pos = 0
        for ws in evaluate:
            counts = replies[pos : pos + len(self._psi)]
            pos += len(self._psi)
            samples = replies[pos : pos + len(self._ks)]
            pos += len(self._ks)
            offsets = _window_offsets(replies[pos])
            end = _window_end(replies[pos], ws, self.window_seconds)
            pos += 1
            signals += self._evaluate_window(ws, counts, samples, offsets, end)
        if signals:
            fault_point("window-claimed")  # claimed, evaluated, drifted: nothing decided or produced yet
        return signals

    def _take_over(self, orphans: list[float], now: float) -> list[float]:
        """Take over the pending closes whose owner is gone; return those to evaluate again.

        A close is taken over when it was claimed (or last taken over) ``close_timeout_seconds``
        ago, or its owner is this worker id's previous instance (a restart), or this instance
        itself (a batch it rewound). Decided ones give their stored alerts (``recovered``).
        """
        pipe = self.r.pipeline(transaction=False)
        for ws in orphans:
            pipe.get(self.closed_key(ws))
        raws = pipe.execute()
        done: list[str] = []
        evaluate: list[float] = []
        for ws, raw in zip(orphans, raws, strict=True):
            m = _parse_marker(raw)
            if m is None or m.get("state") not in ("pending", "decided"):
                done.append(_ts_text(ws))  # expired or published: nothing left to do
                continue
            if not self._gone(str(m.get("owner", "")), float(m.get("at", 0.0)), now):
                continue  # another worker's close, in flight
            new = {**m, "owner": self.owner, "at": now}
            ok = self._takeover(
                keys=[self.closed_key(ws), self.pending_key],
                args=[_text(raw), json.dumps(new, separators=(",", ":")), repr(float(now)), _ts_text(ws)],
            )
            if not int(ok):
                continue  # someone else took it over first
            self.inflight[ws] = now
            if m["state"] == "decided":
                self.recovered += [DriftAlert.model_validate(a) for a in m.get("alerts", [])]
            else:
                evaluate.append(ws)
        if done:
            self.r.zrem(self.pending_key, *done)
        return evaluate

    def _gone(self, owner: str, at: float, now: float) -> bool:
        """Whether an in-flight owner is gone: timed out, a previous instance, or this one's abandoned."""
        return (
            owner == self.owner
            or owner.rsplit("/", 1)[0] == self.worker_id
            or now - at >= self.close_timeout_seconds
        )

    def _take_over_alerts(self, raw_outbox: Mapping[Any, Any], now: float) -> None:
        for field, raw in raw_outbox.items():
            aid = _text(field)
            if aid in self.outbox:
                continue
            doc = json.loads(_text(raw))
            if not self._gone(str(doc.get("owner", "")), float(doc.get("at", 0.0)), now):
                continue
            new = json.dumps({**doc, "owner": self.owner, "at": now}, separators=(",", ":"))
            if int(self._takeover_alert(keys=[self.outbox_key], args=[aid, _text(raw), new])):
                self.outbox.add(aid)
                self.recovered.append(parse_output(doc["alert"]))

    def record_decision(self, pipe: Any, alerts: Sequence[DriftOutput]) -> None:
        """Queue on `pipe` (the alert policy's ``MULTI``) where the decided alerts are kept until published.

        A window with alerts becomes "decided" atomically with the policy state that emitted them,
        so whoever takes it over publishes exactly these alerts rather than deciding again; the
        other alerts (ADWIN's) and incident events go to the outbox, likewise.
        """
        kept: set[str] = set()
        for ws, at in self.inflight.items():
            mine = [
                a
                for a in alerts
                if isinstance(a, DriftAlert) and a.detector in WINDOWED_DETECTORS and a.window_start_ts == ws
            ]
            if mine:
                pipe.set(self.closed_key(ws), self._marker_value("decided", at, mine), xx=True, keepttl=True)
                kept |= {a.id for a in mine}
        loose = {a.id: a for a in alerts if a.id not in kept}
        if loose:
            entry = {"owner": self.owner, "at": self._now}
            pipe.hset(
                self.outbox_key,
                mapping={
                    aid: json.dumps({**entry, "alert": a.model_dump(mode="json")}, separators=(",", ":"))
                    for aid, a in loose.items()
                },
            )
            pipe.expire(self.outbox_key, self.ttl_seconds)
            self.outbox |= set(loose)

    def mark_published(self) -> None:
        """The in-flight windows' alerts are produced and their batch committed: mark them published.

        Only the windows this instance still owns: one taken over meanwhile (this worker was slower
        than ``close_timeout_seconds``) stays pending for its new owner, which publishes it again.
        """
        if self.outbox:
            self.r.hdel(self.outbox_key, *sorted(self.outbox))
            self.outbox.clear()
        if not self.inflight:
            return
        args: list[str] = [self.owner]
        for ws, at in self.inflight.items():
            args += [self._marker_value("published", at), _ts_text(ws)]
        self._publish(keys=[self.pending_key, *[self.closed_key(ws) for ws in self.inflight]], args=args)
        self.inflight.clear()

    def abandon(self) -> None:
        """The batch that closed the in-flight windows will be redone: let the redo take them over."""
        self._read_ahead = None
        self.inflight.clear()
        self.outbox.clear()
        self.recovered = []

    def _evaluate_window(
        self,
        ws: float,
        counts: list[Any],
        samples: list[Any],
        offsets: Mapping[int, tuple[int, int]],
        end: float | None = None,
    ) -> list[DriftSignal]:
        end = ws + self.window_seconds if end is None else end
        k = round(ws / self.window_seconds)
        merged: dict[str, np.ndarray] = {}
        for f, raw in zip(self._psi, counts, strict=True):
            c = np.zeros(self._psi[f].binning.n_bins, dtype=np.int64)
            for b, v in raw.items():
                c[int(_text(b))] = int(_text(v))
            merged[f] = c
        total = max((int(c.sum()) for c in merged.values()), default=0)
        window = ClosedWindow(
            panes=(), start_ts=ws, end_ts=end, start_index=k, end_index=round(end / self.window_seconds),
            n=total,
        )  # fmt: skip
        signals: list[DriftSignal] = []
        stats: list[WindowStat] = []
        for f, c in merged.items():
            psi = self._psi[f]
            self.bins[f] = {
                "labels": list(psi.binning.labels),
                "reference": psi.binning.reference_proportions.tolist(),
                "counts": c.tolist(),
                "window_start_ts": ws,
                "window_end_ts": end,
            }
            ev = psi.evaluate_counts(c, window)
            if ev is not None:
                stats.append(ev.stat())
                sig = psi.signal(ev)
                if sig is not None:
                    signals.append(sig)
            mr = self._missing.get(f)
            if mr is not None:
                mev = mr.evaluate_counts(int(c.sum()), int(c[psi.binning.missing_bin]), window)
                if mev is not None:
                    stats.append(mev.stat())
                    msig = mr.signal(mev)
                    if msig is not None:
                        signals.append(msig)
        ks_evals: list[tuple[KSWindow, Evaluation]] = []
        for f, raw in zip(self._ks, samples, strict=True):
            values = np.array([float(_text(m).rsplit(":", 1)[1]) for m in raw], dtype=np.float64)
            ks = self._ks[f]
            kev = ks.evaluate_values(values, window)
            if kev is not None:
                stats.append(kev.stat())
                ks_evals.append((ks, kev))
        if ks_evals:
            p = [ev.p_value if ev.p_value is not None else 1.0 for _, ev in ks_evals]
            q = self.config.fdr_q
            reject = (
                benjamini_hochberg(p, q).tolist() if q is not None else [x < self.config.ks_alpha for x in p]
            )
            for (ks, ev), rej in zip(ks_evals, reject, strict=True):
                ksig = ks.signal(ev, rej)
                if ksig is not None:
                    signals.append(ksig)
        self.windows += stats
        if offsets:
            signals = [sig.model_copy(update={"window_offsets": dict(offsets)}) for sig in signals]
        return signals

    def update(
        self,
        columns: Mapping[str, np.ndarray],
        ts: np.ndarray,
        partitions: np.ndarray | int,
        offsets: np.ndarray,
        scores: np.ndarray | None = None,
        now: float | None = None,
    ) -> list[DriftSignal]:
        """`add` the batch, then `close_ready` (call `mark_published` once the outputs are durable)."""
        self.add(columns, ts, partitions, offsets, scores=scores, now=now)
        return self.close_ready(now=now)

    def merged_counts(self, feature: str, window_start: float) -> np.ndarray:
        """The merged bin counts of one window of `feature` (what PSI is computed on)."""
        raw = self.r.hgetall(self.feature_key(feature, window_start))
        c = np.zeros(self._psi[feature].binning.n_bins, dtype=np.int64)
        for b, v in raw.items():
            c[int(_text(b))] = int(_text(v))
        return c
