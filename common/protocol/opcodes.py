"""Every message of the system, with stable numbers.

Numbers are part of the wire format: never renumber, only append.
`docs/protocol.md` documents the parameters of each one.
"""

from __future__ import annotations

from enum import IntEnum


class MessageType(IntEnum):
    # generic replies and liveness
    REPLY = 1  # success reply to a request; carries its request id
    ERROR = 2  # error reply to a request: {code, message, field?}
    PING = 3  # request: {} -> REPLY {time}

    # accounts and sessions
    REGISTER = 10
    LOGIN = 11
    LOGOUT = 12
    KICKED = 13  # push: this session was replaced by a login elsewhere

    # contacts and presence
    CONTACT_LIST = 20
    PRESENCE = 21  # push: a friend came online or went offline
    CONTACT_ADDED = 22  # push: a new friend or room in the contact list
    CONTACT_REMOVED = 23  # push: a friend or room left the contact list

    # friends
    SEARCH_USERS = 30
    ADD_FRIEND = 31
    FRIEND_REQUEST = 32  # push: someone asks to be your friend
    RESOLVE_FRIEND_REQUEST = 33
    DELETE_FRIEND = 34
    CERTIFICATE = 35
    FRIEND_REQUEST_REFUSED = 36  # push: someone declined your friend request

    # messages
    SEND_MESSAGE = 40
    NEW_MESSAGE = 41  # push: a batch of sealed messages for you
    ACK_DELIVERY = 42  # request: you stored these messages
    MESSAGE_DELIVERED = 43  # push: a recipient stored your message

    # rooms (group chats)
    CREATE_ROOM = 50
    JOIN_ROOM = 51
    LEAVE_ROOM = 52
    ROOM_MEMBERS = 53
    ROOM_MEMBER_EVENT = 54  # push: someone joined or left a room you are in
    ROOM_CERTIFICATES = 55  # paged: {room_id, after?} -> {members, next}
    ROOM_LOG = 56  # request: the signed membership log, paged from a sequence number
    ROOM_HEAD = 57  # request: a room's policy and log head, to sign a join against
    ROOM_ADMIN = 58  # request: a signed remove or admin grant
    RESOLVE_JOIN = 59  # request: an admin approves (countersigned) or refuses a join

    # attachments (images and files), chunked and resumable
    UPLOAD_BEGIN = 60
    UPLOAD_CHUNK = 61
    DOWNLOAD_CHUNK = 62

    # key transparency (RFC 9162 log of every key the server certifies)
    KT_TREE_HEAD = 70
    KT_CONSISTENCY = 71
    KT_USER_ENTRIES = 72
    KT_RANGE = 73

    # end-to-end v2 (signed KEM keys, sender chains)
    PUBLISH_KEM_KEY = 80  # request: {kem_key} -> REPLY {key_id}

    # signed room membership, continued
    ROOM_JOIN_REQUEST = 90  # push to a room's admins: someone asks to join
    ROOM_JOIN_REFUSED = 91  # push to a joiner: the request was refused or must be re-signed
    ROOM_JOIN_REQUESTS = 92  # request: the pending joins of a room (admins)

    # linking a new computer (one-time code, relayed key exchange)
    LINK_OPEN = 100  # request, before login: {username} -> REPLY {code, expires_in}
    LINK_JOIN = 101  # request: {code} -> REPLY {address}
    LINK_SEND = 102  # request: {data} -> REPLY {}; the other end gets LINK_DATA
    LINK_CLOSE = 103  # request: {reason} -> REPLY {}
    LINK_JOINED = 104  # push to the new computer: {address}
    LINK_DATA = 105  # push: {data}
    LINK_CLOSED = 106  # push: {reason}


#: Messages the server sends on its own (request id 0).
PUSHES = frozenset(
    {
        MessageType.KICKED,
        MessageType.PRESENCE,
        MessageType.CONTACT_ADDED,
        MessageType.CONTACT_REMOVED,
        MessageType.FRIEND_REQUEST,
        MessageType.FRIEND_REQUEST_REFUSED,
        MessageType.NEW_MESSAGE,
        MessageType.MESSAGE_DELIVERED,
        MessageType.ROOM_MEMBER_EVENT,
        MessageType.ROOM_JOIN_REQUEST,
        MessageType.ROOM_JOIN_REFUSED,
        MessageType.LINK_JOINED,
        MessageType.LINK_DATA,
        MessageType.LINK_CLOSED,
    }
)

#: Requests a client may send before it has logged in.
UNAUTHENTICATED_REQUESTS = frozenset(
    {
        MessageType.PING,
        MessageType.REGISTER,
        MessageType.LOGIN,
        MessageType.LINK_OPEN,
        MessageType.LINK_SEND,
        MessageType.LINK_CLOSE,
    }
)
