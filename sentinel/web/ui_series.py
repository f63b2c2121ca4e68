"""Time series behind the status UI: the recent evaluations (sparklines) and Prometheus or
Loki range queries (service charts), both bounded and shared between viewers.

- `History` keeps the last `size` values Sentinel itself judged for each SLO instance, fed
  by a result hook: the overview's sparklines cost no query, whatever the number of
  instances or of people looking.
- `RangeCache` answers range queries with at most `MAX_POINTS` points a series, the end
  aligned to the step, cached until the next evaluation cycle finishes, and shared by
  identical concurrent requests: ten people opening one service page cost the source one
  query per chart per cycle.
"""

from __future__ import annotations

import asyncio
import math
from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from markupsafe import Markup

from sentinel.errors import SourceError
from sentinel.evaluate.slo import SLOResult
from sentinel.rules.model import RuleGroup
from sentinel.slicing import ITEMS_PER_YIELD, drain, run
from sentinel.sources.base import Series, Source
from sentinel.web.charts import sparkline

MAX_POINTS = 500
HISTORY_SIZE = 20


class History:
    """The last values of each SLO instance, one per evaluation, oldest first, and their
    sparklines, drawn once per evaluation however many people look."""

    def __init__(self, size: int = HISTORY_SIZE) -> None:
        self.size = size
        # Every instance's ring in two flat arrays, by slot: `_counts[slot]` values
        # recorded, `_values[slot * size:][:size]` the last ones as 4-byte floats (a
        # sparkline is 20 pixels high; its colour compares with the threshold rounded the
        # same way, `SparkReader.spark`). An array of doubles per instance cost ~240
        # bytes with its object and header; at 70,000 instances (10,000 services) the flat
        # rings hold ~9 MB less, and a reader's copy is two memcpy and a dict instead of
        # 70,000 arrays. Per group, its instances' slots by key (those of its latest
        # results: an instance missing is forgotten).
        self._groups: dict[str, dict[str, int]] = {}
        self._free: list[int] = []  # slots of instances gone, reused by new ones
        self._counts: array[int] = array("q")
        self._values: array[float] = array("f")
        self._sparks: dict[str, Markup] = {}
        # The groups of the rules (None: not told yet, all are); the slots of the groups
        # a reload removed, by key, for the group an instance moved to (`keep_groups`).
        self._current: frozenset[str] | None = None
        self._orphans: dict[str, int] = {}
        # Records under way: groups record in slices, side by side, and each holds slot
        # numbers, so the arrays are compacted only by the one record running alone.
        self._recording = 0
        self._recorders: set[str] = set()  # the groups whose record is under way

    async def observe(self, group: RuleGroup, results: Sequence[SLOResult], now: float) -> None:
        # In slices (sentinel/slicing.py): a few thousand results in one piece held the
        # event loop, and the gate's requests with it, for milliseconds each cycle.
        await drain(self._record(group.name, results))

    def record(self, group: str, results: Sequence[SLOResult]) -> None:
        run(self._record(group, results))

    def keep_groups(self, names: Iterable[str]) -> None:
        """Forget the groups not in `names` (a reload removed them): their instances'
        slots wait in `_orphans` for a group that records the same key (an SLO moved to
        another file keeps its sparkline) until the next reload frees them. A removed
        group recording right now holds its slots until its record ends, which frees
        them (`_record_steps`)."""
        self._current = frozenset(names)
        self._free += self._orphans.values()
        self._orphans = {}
        removed = [g for g in self._groups if g not in self._current]
        for name in removed:
            if name not in self._recorders:
                self._orphans.update(self._groups.pop(name))

    def _record(self, group: str, results: Sequence[SLOResult]) -> Iterator[None]:
        self._recording += 1
        self._recorders.add(group)  # a group's cycles (and records) never overlap
        try:
            yield from self._record_steps(group, results)
        finally:
            self._recording -= 1
            self._recorders.discard(group)

    def _record_steps(self, group: str, results: Sequence[SLOResult]) -> Iterator[None]:
        old = self._groups.get(group, {})
        slots: dict[str, int] = {}
        counts, values, size = self._counts, self._values, self.size
        done = False
        try:
            for n, result in enumerate(results, 1):
                if n % ITEMS_PER_YIELD == 0:
                    yield
                key = result.key
                slot = old.get(key)
                if slot is None:
                    slot = slots.get(key)
                    if slot is None:
                        # (`self._orphans`, not a local: a reload may replace it meanwhile)
                        slot = self._orphans.pop(key, None) if self._orphans else None
                        if slot is None:
                            slot = self._take_slot()
                slots[key] = slot
                count = counts[slot]
                value = result.value
                # A finite value beyond a 4-byte float's range is stored as +-Inf (a gap
                # in the line; the row shows the value itself).
                values[slot * size + count % size] = math.nan if value is None else value
                counts[slot] = count + 1
            done = True
        finally:
            if not done:  # cancelled part-way: the slots taken for new keys go back
                self._free += [slot for key, slot in slots.items() if key not in old]
        # Instances that left the group (a reload, a vanished label) are forgotten.
        self._free += [old[gone] for gone in old.keys() - slots.keys()]
        if self._current is not None and group not in self._current:
            self._free += slots.values()  # a group a reload removed while it recorded
            self._groups.pop(group, None)
        else:
            self._groups[group] = slots
        for key in slots:
            self._sparks.pop(key, None)
        live = len(self._counts) - len(self._free)
        if self._recording == 1 and len(self._free) > max(1024, live):
            self._compact()

    def _take_slot(self) -> int:
        if self._free:
            slot = self._free.pop()
            self._counts[slot] = 0
            return slot
        self._counts.append(0)
        self._values.extend(array("f", [math.nan]) * self.size)
        return len(self._counts) - 1

    def _compact(self) -> None:
        """Rebuild the arrays with the live instances only: after a reload or a churn
        of labels left more free slots than live ones (orphans are let go)."""
        size, counts, values = self.size, array("q"), array("f")
        for slots in self._groups.values():
            for key, slot in list(slots.items()):
                counts.append(self._counts[slot])
                values.extend(self._values[slot * size : (slot + 1) * size])
                slots[key] = len(counts) - 1
        self._counts, self._values, self._free, self._orphans = counts, values, [], {}

    def _slots(self) -> dict[str, int]:
        """Every instance's slot (the groups' maps in one)."""
        merged: dict[str, int] = {}
        for slots in self._groups.values():
            merged.update(slots)
        return merged

    def values(self, key: str) -> Sequence[float | None]:
        """The instance's last values, oldest first (None where it had none)."""
        slot = self._slot(key)
        return [] if slot is None else _ring(self._values, slot, self._counts[slot], self.size)

    def _slot(self, key: str) -> int | None:
        # The last group holding it, as in `_slots` (a key two groups produce).
        for slots in reversed(self._groups.values()):
            slot = slots.get(key)
            if slot is not None:
                return slot
        return None

    def reader(self) -> SparkReader:
        """A copy of this moment's values and sparklines that another thread may draw from
        (the rings change on the loop); `keep` takes back what it drew."""
        return SparkReader(
            self.size,
            self._slots(),
            self._counts[:],
            self._values[:],
            dict(self._sparks),
        )

    def keep(self, reader: SparkReader) -> None:
        """Caches the sparklines `reader` drew whose instance has no newer value since."""
        if len(self._sparks) > 4 * (len(self._counts) - len(self._free)) + 100:
            self._sparks.clear()  # instances long gone
        for key, drawn in reader.drawn.items():
            slot, seen = self._slot(key), reader.slots.get(key)
            # Drawn from no values (a new instance whose slot came after the copy): never
            # cached, the next reader draws it from its first value.
            if slot is not None and seen is not None and self._counts[slot] == reader.counts[seen]:
                self._sparks[key] = drawn


class SparkReader:
    """`History.reader()`: sparklines drawn from copies, never from the live rings."""

    def __init__(
        self,
        size: int,
        slots: dict[str, int],
        counts: array[int],
        values: array[float],
        sparks: dict[str, Markup],
    ) -> None:
        self.size, self.slots, self.counts, self.values = size, slots, counts, values
        self.sparks = sparks
        self.drawn: dict[str, Markup] = {}

    def spark(self, key: str, result: SLOResult) -> Markup:
        drawn = self.sparks.get(key) or self.drawn.get(key)
        if drawn is None:
            slot = self.slots.get(key)
            drawn = sparkline(
                _ring(self.values, slot, self.counts[slot], self.size) if slot is not None else [],
                # Rounded as the values were: a value at the threshold (0.3 s, say) stays
                # on it, not above, and its line is not drawn as a breach.
                array("f", (result.threshold,))[0],
                result.good_when,
                self.size,
            )
            self.drawn[key] = drawn
        return drawn


def _ring(values: array[float], slot: int, count: int, size: int) -> list[float | None]:
    """One instance's values, oldest first (None where there was none)."""
    base = slot * size
    if count <= size:
        kept = values[base : base + count]
    else:
        split = base + count % size
        kept = values[split : base + size] + values[base:split]
    return [None if math.isnan(v) else v for v in kept]


def range_step(seconds: float) -> float:
    """The step that keeps a range of `seconds` within MAX_POINTS points (whole seconds)."""
    return float(max(1, math.ceil(seconds / (MAX_POINTS - 1))))


@dataclass(frozen=True)
class RangeAnswer:
    start: float
    end: float
    step: float
    series: tuple[Series, ...] = ()
    error: str | None = None


CacheKey = tuple[str, str, float, float, float]


class RangeCache:
    """Range queries cached per evaluation cycle (`generation` changes when one finishes)
    and single-flight: concurrent identical requests await one query."""

    def __init__(
        self,
        sources: Callable[[], Mapping[str, Source]],
        generation: Callable[[], int],
        capacity: int = 256,
    ) -> None:
        self._sources = sources
        self._generation = generation
        self._capacity = capacity
        self._done: OrderedDict[CacheKey, tuple[int, RangeAnswer]] = OrderedDict()
        self._flying: dict[CacheKey, asyncio.Future[RangeAnswer]] = {}
        self.queries = 0  # sent to a source (tests assert viewers share them)

    async def query(self, source: str, expr: str, seconds: float, now: float) -> RangeAnswer:
        step = range_step(seconds)
        # Both ends on the step grid: everyone in the same step shares the answer, and the
        # last point is at `end` (a start off the grid would shift every point before it).
        end = math.floor(now / step) * step
        start = end - math.floor(seconds / step) * step
        key = (source, expr, start, end, step)
        generation = self._generation()
        cached = self._done.get(key)
        if cached is not None and cached[0] == generation:
            self._done.move_to_end(key)
            return cached[1]
        flying = self._flying.get(key)
        if flying is not None:
            return await asyncio.shield(flying)
        future: asyncio.Future[RangeAnswer] = asyncio.get_running_loop().create_future()
        self._flying[key] = future
        try:
            answer = await self._fetch(source, expr, start, end, step)
            future.set_result(answer)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: a cancelled viewer must not log "never retrieved"
            raise
        finally:
            del self._flying[key]
        self._done[key] = (generation, answer)
        while len(self._done) > self._capacity:
            self._done.popitem(last=False)
        return answer

    async def _fetch(
        self, source_name: str, expr: str, start: float, end: float, step: float
    ) -> RangeAnswer:
        source = self._sources().get(source_name)
        if source is None:
            return RangeAnswer(start, end, step, error=f"{source_name} is not configured")
        self.queries += 1
        try:
            series = await source.range(expr, start, end, step)
        except SourceError as exc:
            return RangeAnswer(start, end, step, error=str(exc))
        return RangeAnswer(start, end, step, tuple(series))
