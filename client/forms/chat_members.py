"""A group conversation's signed membership on screen: lines, warnings, the member list.

Why it exists: `ChatPanel` shows one conversation; this part does what only groups
need. Each verified change (`MembershipChanged`) becomes a line in the conversation,
each `MembershipAlarm` a warning line; the member list shows the verified members and
admins and the owner, and an admin gets who waits to join (approve / refuse) and, per member,
remove and make admin. Every request runs off the Tk thread (`FormHost.run`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from client import i18n
from client.components.busy import alive
from client.core.client import ChatClient
from client.core.event_types import (
    Event,
    JoinRequested,
    MembershipAlarm,
    MembershipChanged,
)
from client.forms.chat import membership_alarm_line, membership_line
from client.forms.chat_panels import MemberActions
from client.forms.errors import describe_error
from common.errors import UchatError

if TYPE_CHECKING:
    from client.forms.chat_form import ChatPanel


@dataclass(frozen=True)
class MemberView:
    """What one refresh of the member list found (fetched off the Tk thread)."""

    members: list[dict[str, Any]]
    admins: list[str]
    requests: list[str]
    me: str
    owner: str


def fetch_member_view(client: ChatClient, room_id: int) -> MemberView:
    members = client.room_members(room_id)
    admins = client.room_admins(room_id)
    me = client.username or ""
    requests = client.join_requests(room_id) if me in admins else []
    owner = next((str(m["username"]) for m in members if m.get("owner") is True), "")
    return MemberView(members, admins, requests, me, owner)


class GroupMembers:
    """The membership side of one group's `ChatPanel`."""

    def __init__(self, panel: ChatPanel) -> None:
        self.panel = panel
        self.room_id = panel.contact.room_id
        self.shown_seqs: set[int] = set()

    def actions(self) -> MemberActions:
        return MemberActions(
            remove=lambda name: self._act("remove_member", name),
            make_admin=lambda name: self._act("grant_admin", name),
            make_owner=lambda name: self._act("transfer_ownership", name),
            approve=lambda name: self._act("approve_join", name),
            refuse=lambda name: self._act("refuse_join", name),
        )

    def _act(self, method: str, name: str) -> None:
        client = self.panel.app.client
        if client is None:
            return
        self.panel.app.run(
            getattr(client, method),
            self.room_id,
            name,
            on_result=lambda _r: self.refresh(),
            on_error=self._failed,
        )

    def _failed(self, exc: BaseException) -> None:
        if alive(self.panel):
            self.panel.show_info(describe_error(exc).message, level="warning")

    def show_recent_lines(self, since_ms: int) -> None:
        """At opening: the changes since the newest message shown, as lines (and a
        legacy room's unverified first members)."""
        client = self.panel.app.client
        if client is None:
            return
        try:
            changes = client.membership_lines(self.room_id)
        except UchatError:
            return
        for change in changes:
            # A pre-upgrade room's unsigned start is always said: nobody verified it.
            if change.time >= since_ms or change.change == "legacy":
                self._line(change)

    def _line(self, change: MembershipChanged) -> None:
        if change.seq in self.shown_seqs:
            return
        self.shown_seqs.add(change.seq)
        text = membership_line(change.change, change.actor, change.subject, change.approver)
        self.panel.view.add_notice(text)

    def on_event(self, event: Event) -> bool:
        """Handle a signed-membership event of this group; False if it is not one.

        The server's own RoomMemberChanged stays with the panel (header count); its
        line in the conversation is this verified change.
        """
        if isinstance(event, MembershipChanged) and event.room_id == self.room_id:
            self._line(event)
            self.refresh()
        elif isinstance(event, MembershipAlarm) and event.room_id == self.room_id:
            line = membership_alarm_line(event.reason, event.detail, event.names)
            self.panel.view.add_notice(line, warning=True)
        elif isinstance(event, JoinRequested) and event.room_id == self.room_id:
            self.panel.view.add_notice(i18n.t("members.join_requested", name=event.username))
            self.refresh()
        else:
            return False
        return True

    def refresh(self) -> None:
        client = self.panel.app.client
        if client is None:
            return

        def show(view: MemberView) -> None:
            members = self.panel.members
            if not alive(self.panel) or members is None:
                return
            online = {str(m["username"]): m.get("online") is True for m in view.members}
            self.panel.show_verified_members(tuple(online))
            can_manage = view.me in view.admins
            members.show(
                online.items(), view.admins, can_manage=can_manage, me=view.me, owner=view.owner
            )
            members.show_requests(view.requests)

        self.panel.app.run(
            fetch_member_view, client, self.room_id, on_result=show, on_error=lambda _e: None
        )  # the names from the contact stay shown
