"""Per-session copies of what the send path looks up for every message.

Why: SEND_MESSAGE used to read the target's whole user row (certificate included) and
then check the friendship, or read a room's membership, for every message. A session
now keeps its user's friends by name and the members of the rooms it sent to. Any
write to the `friends` or `room_user` tables, from any code, bumps
`Database.membership_generation` (temporary triggers), and a cache stamped with an
older generation, or built for another user of the connection, is thrown away.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from common.crypto.membership import member_list_hash
from server.storage import messages, rooms
from server.storage.database import Database


class CachingConnection(Protocol):
    """Where a session keeps its cache (`server.net.connection.Connection`)."""

    session_cache: SessionCache | None


@dataclass(slots=True)
class SessionCache:
    user_id: int
    generation: int
    #: lower-case username -> (username, user id) of every friend; None until needed.
    friends: dict[str, tuple[str, int]] | None = None
    #: room id -> {member username: member id}, for rooms this session sent to.
    rooms: dict[int, dict[str, int]] = field(default_factory=dict)
    #: room id -> hash of its member list (what the sender must have sealed for).
    member_hashes: dict[int, bytes] = field(default_factory=dict)
    #: conversations whose delivery cursors match the membership of this generation.
    cursors_synced: set[str] = field(default_factory=set)


def cache_for(connection: CachingConnection, db: Database, user_id: int) -> SessionCache:
    """The connection's cache if still valid for `user_id`, else a fresh empty one."""
    cache = connection.session_cache
    generation = db.membership_generation
    if cache is None or cache.generation != generation or cache.user_id != user_id:
        cache = SessionCache(user_id, generation)
        connection.session_cache = cache
    return cache


def friend_named(
    connection: CachingConnection, db: Database, user_id: int, name: str
) -> tuple[str, int] | None:
    """(username, id) of the caller's friend called `name` (any letter case), else None."""
    cache = cache_for(connection, db, user_id)
    if cache.friends is None:
        rows = db.all(
            "SELECT u.id, u.username FROM friends f JOIN users u ON u.id = f.to_user_id"
            " WHERE f.from_user_id = ? AND f.accepted = 1",
            (user_id,),
        )
        cache.friends = {row[1].lower(): (row[1], row[0]) for row in rows}
    return cache.friends.get(name.lower())


def room_members(
    connection: CachingConnection, db: Database, user_id: int, room_id: int
) -> dict[str, int]:
    """{username: id} of the room's members ({} for a room that does not exist)."""
    cache = cache_for(connection, db, user_id)
    members = cache.rooms.get(room_id)
    if members is None:
        members = {member.username: member.id for member in rooms.members(db, room_id)}
        cache.rooms[room_id] = members
    return members


def room_member_hash(
    connection: CachingConnection, db: Database, user_id: int, room_id: int
) -> bytes:
    """The hash a sender seals for the room's current members (`member_list_hash`)."""
    cache = cache_for(connection, db, user_id)
    found = cache.member_hashes.get(room_id)
    if found is None:
        found = member_list_hash(str(room_id), room_members(connection, db, user_id, room_id))
        cache.member_hashes[room_id] = found
    return found


def ensure_cursors(
    connection: CachingConnection, db: Database, user_id: int, target_type: str, target_id: int
) -> None:
    """Delivery cursors for every member of the conversation, once per membership change."""
    cache = cache_for(connection, db, user_id)
    key = messages.conversation_key(user_id, target_type, target_id)
    if key in cache.cursors_synced:
        return
    if target_type == messages.USER:
        messages.ensure_pair_cursors(db, user_id, target_id)
    else:
        messages.sync_room_cursors(db, target_id)
    cache.cursors_synced.add(key)
