"""Bus hints: exact wire form, round trips, and refusal of anything else."""

from __future__ import annotations

import base64
import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.cluster.hints import (
    LINK_REASONS,
    MAX_HINT_BYTES,
    BadHint,
    Hint,
    KickSession,
    LinkClosed,
    LinkData,
    LinkJoin,
    LinkJoined,
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
from server.links import MAX_MESSAGE_SIZE

ids = st.integers(min_value=0, max_value=2**62)
names = st.text(min_size=1, max_size=50)
refs = st.text("0123456789abcdef", min_size=32, max_size=32)
digests = st.text("0123456789abcdef", min_size=64, max_size=64)
hints = st.one_of(
    st.builds(UserNews, ids),
    st.builds(UsersNews, st.lists(ids, max_size=20).map(tuple)),
    st.builds(RoomNews, ids, names),
    st.builds(PresenceChanged, ids, names, st.booleans()),
    st.builds(KickSession, ids, names, names),
    st.builds(MembershipChanged, st.tuples(ids, ids)),
    st.builds(NodeDown, names, st.lists(ids, max_size=20).map(tuple)),
    st.builds(Relay, st.lists(ids, max_size=20).map(tuple), st.binary(max_size=300)),
    st.builds(LinkJoin, refs, names, digests, names, names),
    st.builds(LinkJoined, refs, names, names),
    st.builds(LinkData, refs, names, st.binary(max_size=MAX_MESSAGE_SIZE)),
    st.builds(LinkClosed, refs, st.sampled_from(sorted(LINK_REASONS))),
)
REF = "0123456789abcdef" * 2
DIGEST = REF * 2


def test_wire_form_is_compact_json() -> None:
    assert encode(UserNews(7)) == b'{"t":"user","u":7}'
    assert encode(UsersNews((7, 8))) == b'{"t":"news","us":[7,8]}'
    assert encode(KickSession(7, "b", "10.0.0.9:5000")) == (
        b'{"t":"kick","u":7,"n":"b","a":"10.0.0.9:5000"}'
    )
    assert encode(NodeDown("a", (1, 2))) == b'{"t":"down","us":[1,2],"n":"a"}'
    assert encode(PresenceChanged(3, "b", True)) == b'{"t":"presence","u":3,"n":"b","on":true}'
    assert encode(Relay((4, 5), b"\x00push")) == b'{"t":"relay","us":[4,5],"b":"AHB1c2g="}'
    assert encode(LinkJoin(REF, "b", DIGEST, "alice", "10.0.0.9:5000")) == (
        b'{"t":"ljoin","ref":"%s","n":"b","k":"%s","acc":"alice","a":"10.0.0.9:5000"}'
        % (REF.encode(), DIGEST.encode())
    )
    assert encode(LinkJoined(REF, "a", "10.0.0.8:4000")) == (
        b'{"t":"ljoined","ref":"%s","n":"a","a":"10.0.0.8:4000"}' % REF.encode()
    )
    assert encode(LinkData(REF, "a", b"\x01k")) == (
        b'{"t":"ldata","ref":"%s","n":"a","b":"AWs="}' % REF.encode()
    )
    assert encode(LinkClosed(REF, "peer_gone")) == (
        b'{"t":"lclosed","ref":"%s","why":"peer_gone"}' % REF.encode()
    )


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
        # device-link hints: identifiers of the exact form, known reasons, bounded data
        b'{"t":"lclosed","ref":"%s","why":"because"}' % REF.encode(),
        b'{"t":"lclosed","ref":"%s","why":null}' % REF.encode(),
        b'{"t":"lclosed","ref":"%s"}' % REF.encode(),
        b'{"t":"lclosed","ref":"%s","why":"done"}' % REF.upper().encode(),
        b'{"t":"lclosed","ref":"%s","why":"done"}' % REF[:-1].encode(),
        b'{"t":"lclosed","ref":7,"why":"done"}',
        b'{"t":"ldata","ref":"%s","n":"a"}' % REF.encode(),
        b'{"t":"ldata","ref":"%s","n":"","b":"AA=="}' % REF.encode(),
        b'{"t":"ldata","ref":"%s","n":"a","b":"%s"}'
        % (REF.encode(), base64.b64encode(bytes(MAX_MESSAGE_SIZE + 1))),
        b'{"t":"ljoined","ref":"%s","n":"a"}' % REF.encode(),
        b'{"t":"ljoin","ref":"%s","n":"b","k":"%s","acc":"alice","a":"x:1"}'
        % (REF.encode(), REF.encode()),
        b'{"t":"ljoin","ref":"%s","n":"b","k":"%s","a":"x:1"}' % (REF.encode(), DIGEST.encode()),
        b'{"t":"ljoin","ref":"%s","n":"b","k":"%s","acc":"%s","a":"x:1"}'
        % (REF.encode(), DIGEST.encode(), b"a" * 201),
    ],
)
def test_anything_else_is_a_bad_hint(data: bytes) -> None:
    with pytest.raises(BadHint):
        decode(data)


@given(st.binary(max_size=200))
def test_random_bytes_never_raise_anything_but_bad_hint(data: bytes) -> None:
    with contextlib.suppress(BadHint):
        decode(data)


def test_the_largest_link_message_fits_in_a_hint() -> None:
    largest = encode(LinkData(REF, "a" * 200, bytes(MAX_MESSAGE_SIZE)))
    assert len(largest) < MAX_HINT_BYTES
    assert decode(largest) == LinkData(REF, "a" * 200, bytes(MAX_MESSAGE_SIZE))
