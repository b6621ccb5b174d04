"""One module per request opcode; the dispatcher builds its table from `HANDLERS`.

Each module exports `OPCODE`, `REQUIRES_AUTH` and `handle(ctx, params)`.
"""

from __future__ import annotations

from types import ModuleType

from server.handlers import (
    ack_delivery,
    add_friend,
    certificate,
    contact_list,
    create_room,
    delete_friend,
    download_chunk,
    join_room,
    kt_consistency,
    kt_range,
    kt_tree_head,
    kt_user_entries,
    leave_room,
    link_close,
    link_join,
    link_open,
    link_send,
    login,
    logout,
    ping,
    publish_kem_key,
    register,
    resolve_friend_request,
    room_certificates,
    room_members,
    search_users,
    send_message,
    upload_begin,
    upload_chunk,
)

HANDLERS: tuple[ModuleType, ...] = (
    ping,
    register,
    login,
    logout,
    contact_list,
    search_users,
    add_friend,
    resolve_friend_request,
    delete_friend,
    certificate,
    publish_kem_key,
    send_message,
    ack_delivery,
    create_room,
    join_room,
    leave_room,
    room_members,
    room_certificates,
    upload_begin,
    upload_chunk,
    download_chunk,
    kt_tree_head,
    kt_consistency,
    kt_user_entries,
    kt_range,
    link_open,
    link_join,
    link_send,
    link_close,
)
