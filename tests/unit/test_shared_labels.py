"""The engine keeps one labels dict per label set across the answers it keeps for reuse
(`Engine._keep`): every window of an SLO answers the same instances, and each answer
brought its own copies. A dict seen before is recognised by identity (the compact
Prometheus path hands the same dicts every cycle); what it remembers stays bounded and
starts afresh after a reload."""

from __future__ import annotations

from sentinel.evaluate.engine import Engine, PlannedQuery
from sentinel.evaluate.wiring import renderers
from sentinel.slicing import Slicer, finish_now
from sentinel.sources.base import KeptLabels, Sample

AT = 1_700_000_000.0


def answer(count: int, dicts: list[dict[str, str]] | None = None) -> list[Sample]:
    labels = dicts or [{"service": f"s{i}", "sentinel_part": "bad"} for i in range(count)]
    return [Sample(d, float(i)) for i, d in enumerate(labels)]


def test_equal_label_sets_share_the_first_dict_every_time() -> None:
    engine = Engine({}, renderers())
    first = finish_now(engine._share_labels(answer(100)))
    for _ in range(3):
        again = answer(100)  # equal contents, other dicts each time (decoded in full)
        shared = finish_now(engine._share_labels(again))
        assert all(a.labels is b.labels for a, b in zip(first, shared, strict=True))
        assert [s.value for s in shared] == [s.value for s in again]
    # The first answer's own dicts, handed again (the compact path's): kept as they are.
    kept = finish_now(engine._share_labels(first))
    assert all(a is b for a, b in zip(first, kept, strict=True))


def test_a_new_dict_the_source_keeps_becomes_the_shared_one() -> None:
    """The compact path's cache may drop a set and decode it anew (its bound, or at
    start-up): from then on it hands the new dict, which must become the shared one, or
    every sample of it is hashed and rebuilt each cycle. Whatever answers come between."""
    engine = Engine({}, renderers())

    def kept(count: int) -> list[Sample]:
        return answer(count, [KeptLabels(s.labels) for s in answer(count)])

    first = finish_now(engine._share_labels(kept(100)))
    other = [{"service": f"s{i}", "sentinel_part": "bad", "route": "/"} for i in range(50)]
    redecoded = kept(100)  # the source's new dicts, handed from now on
    for between in (answer(100), answer(50, other)):  # another query's answer in between
        finish_now(engine._share_labels(between))
    once = finish_now(engine._share_labels(redecoded))
    assert all(a is b for a, b in zip(redecoded, once, strict=True)), "kept as they are"
    assert all(a.labels is not b.labels for a, b in zip(first, once, strict=True))
    assert len(engine._label_sets) == 150
    assert all(engine._seen[id(s.labels)] is s.labels for s in redecoded)
    assert not any(id(s.labels) in engine._seen for s in first), "no longer named"
    # Answers decoded in full share the source's dicts now.
    full = finish_now(engine._share_labels(answer(100)))
    assert all(a.labels is b.labels for a, b in zip(redecoded, full, strict=True))


async def test_what_it_remembers_stays_bounded_and_a_reload_starts_afresh() -> None:
    engine = Engine({}, renderers())
    planned = PlannedQuery("prometheus", "q")
    first = await engine._keep(planned, AT, answer(100), Slicer())
    for _ in range(50):  # fresh dicts every cycle (answers decoded in full)
        await engine._keep(planned, AT, answer(100), Slicer())
        assert len(engine._seen) <= len(engine._label_sets)  # the shared dicts only
    assert len(engine._label_sets) == 100
    engine.forget([])
    fresh = answer(100)
    after = await engine._keep(planned, AT, fresh, Slicer())
    assert len(engine._seen) == 100  # nothing from before the reload is held
    # Not tied to the dicts from before the reload: the new ones are the shared ones.
    assert all(a.labels is b.labels for a, b in zip(fresh, after, strict=True))
    assert all(a.labels is not b.labels for a, b in zip(first, after, strict=True))
