"""domain.values: frozen slotted dataclasses whose __init__ sets slots directly, otherwise the
dataclasses they would be."""

from __future__ import annotations

import dataclasses
import inspect
import pickle
from collections.abc import Mapping

import pytest

from domain import events as ev
from domain.collection import Collected
from domain.enrichment import Enrichment
from domain.growth import AccountMemory, Declined, EngagementBucket, EngagementWindow, StateChanges
from domain.identity import Source, SourceCoordinates
from domain.pipeline import Outcome
from domain.values import value


def _shapes(decorate):  # type: ignore[no-untyped-def]
    class Base:
        a: int
        b: str = "b"

    Base = decorate(Base)

    class Child(Base):  # type: ignore[valid-type, misc]
        c: tuple[int, ...] = ()
        d: Mapping[str, int] = dataclasses.field(default_factory=dict)
        e: int | None = dataclasses.field(default=None, kw_only=True)

    return Base, decorate(Child)


PLAIN = _shapes(lambda cls: dataclasses.dataclass(frozen=True, slots=True)(cls))
FAST = _shapes(value)


@pytest.mark.parametrize("index", [0, 1])
def test_the_signature_is_the_dataclass_one(index: int) -> None:
    assert str(inspect.signature(FAST[index])) == str(inspect.signature(PLAIN[index]))


def test_values_behave_like_frozen_dataclasses() -> None:
    plain, fast = PLAIN[1], FAST[1]
    made = fast(1, "x", (2,), e=3)
    assert dataclasses.astuple(made) == dataclasses.astuple(plain(1, "x", (2,), e=3)) == (1, "x", (2,), {}, 3)
    assert made == fast(1, "x", (2,), e=3) and made != fast(1, "x", (2,), e=4)
    assert hash(FAST[0](1)) == hash(FAST[0](1)) == hash(PLAIN[0](1))
    assert repr(made).endswith("(a=1, b='x', c=(2,), d={}, e=3)")
    assert fast(1).d is not fast(1).d  # a fresh default from the factory each time
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.a = 2  # type: ignore[misc]
    with pytest.raises(TypeError):
        fast()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        fast(1, "x", (), {}, 3)  # type: ignore[misc]
    assert not hasattr(made, "__dict__")
    assert pickle.loads(pickle.dumps(Source(id="s", kind="commit", did="d", time_us=1))) == Source(
        id="s", kind="commit", did="d", time_us=1
    )
    assert dataclasses.replace(made, a=5) == fast(5, "x", (2,), e=3)


@pytest.mark.parametrize(
    "cls",
    [Source, SourceCoordinates, Collected, Outcome, StateChanges, AccountMemory, EngagementBucket,
     EngagementWindow, Declined, Enrichment, *ev.EVENT_TYPES, ev.Thread, ev.Link, ev.Media, ev.RecordRef],
    ids=lambda cls: cls.__name__,
)
def test_domain_values_keep_their_dataclass_signature(cls: type) -> None:
    parameters = list(inspect.signature(cls).parameters.values())
    fields = dataclasses.fields(cls)
    assert [p.name for p in parameters] == [f.name for f in sorted(fields, key=lambda f: f.kw_only)]
    for parameter, field in zip(parameters, sorted(fields, key=lambda f: f.kw_only), strict=True):
        assert (parameter.kind is inspect.Parameter.KEYWORD_ONLY) == field.kw_only
        if field.default is not dataclasses.MISSING:
            assert parameter.default == field.default
        elif field.default_factory is dataclasses.MISSING:
            assert parameter.default is inspect.Parameter.empty


def test_the_state_values_the_strategies_copy_field_by_field() -> None:
    """growth builds new AccountMemory, EngagementWindow and EngagementBucket values from old ones
    field by field (cheaper than dataclasses.replace): a new field must be copied there too."""
    assert [f.name for f in dataclasses.fields(AccountMemory)] == ["first_seen_us", "reported_score"]
    assert [f.name for f in dataclasses.fields(EngagementWindow)] == ["author_did", "buckets", "reported_at_us"]
    assert [f.name for f in dataclasses.fields(EngagementBucket)] == ["start_us", "likes", "reposts", "replies", "quotes"]
