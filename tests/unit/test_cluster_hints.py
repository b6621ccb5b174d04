"""Bus hints: exact wire form, round trips, and refusal of anything else."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.cluster.hints import (
    MAX_HINT_BYTES,
    BadHint,
    Hint,
    KickSession,
    MembershipChanged,
    NodeDown,
    PresenceChanged,
    Relay,
    RoomNews,
    UserNews,
    UsersNews,
    decode,
    encode,
)

ids = st.integers(min_value=0, max_value=2**62)
names = st.text(min_size=1, max_size=50)
hints = st.one_of(
    st.builds(UserNews, ids),
    st.builds(UsersNews, st.lists(ids, max_size=20).map(tuple)),
    st.builds(RoomNews, ids, names),
    st.builds(PresenceChanged, ids, names, st.booleans()),
    st.builds(KickSession, ids, names, names),
    st.builds(MembershipChanged, st.tuples(ids, ids)),
    st.builds(NodeDown, names, st.lists(ids, max_size=20).map(tuple)),
    st.builds(Relay, st.lists(ids, max_size=20).map(tuple), st.binary(max_size=300)),
)


def test_wire_form_is_compact_json() -> None:
    assert encode(UserNews(7)) == b'{"t":"user","u":7}'
    assert encode(UsersNews((7, 8))) == b'{"t":"news","us":[7,8]}'
    assert encode(KickSession(7, "b", "10.0.0.9:5000")) == (
        b'{"t":"kick","u":7,"n":"b","a":"10.0.0.9:5000"}'
    )
    assert encode(NodeDown("a", (1, 2))) == b'{"t":"down","us":[1,2],"n":"a"}'
    assert encode(PresenceChanged(3, "b", True)) == b'{"t":"presence","u":3,"n":"b","on":true}'
    assert encode(Relay((4, 5), b"\x00push")) == b'{"t":"relay","us":[4,5],"b":"AHB1c2g="}'


@given(hints)
def test_every_hint_round_trips(hint: Hint) -> None:
    assert decode(encode(hint)) == hint


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b"\xff\xfe",
        b"[]",
        b'{"t":"user"}',
        b'{"t":"user","u":-1}',
        b'{"t":"relay","us":[1]}',
        b'{"t":"relay","us":[1],"b":"not base64!"}',
        b'{"t":"relay","us":[1],"b":7}',
        b'{"t":"user","u":true}',
        b'{"t":"user","u":1.5}',
        b'{"t":"room","r":"3","n":"a"}',
        b'{"t":"room","r":3}',
        b'{"t":"presence","u":1,"n":"a","on":1}',
        b'{"t":"kick","u":1,"n":"b","a":""}',
        b'{"t":"kick","u":1,"s":"old"}',
        b'{"t":"members","us":[1,"2"]}',
        b'{"t":"down","us":[],"n":5}',
        b'{"t":"launch","u":1}',
        json.dumps({"t": "members", "us": list(range(10_001))}).encode(),
        b" " * (MAX_HINT_BYTES + 1),
    ],
)
def test_anything_else_is_a_bad_hint(data: bytes) -> None:
    with pytest.raises(BadHint):
        decode(data)


@given(st.binary(max_size=200))
def test_random_bytes_never_raise_anything_but_bad_hint(data: bytes) -> None:
    with contextlib.suppress(BadHint):
        decode(data)
