"""Every string the user reads, in English and Simplified Chinese.

`t("key", **params)` looks the key up in the active catalog and fills `{params}`.
The language is chosen once at start-up (`use_language`), from the configuration or
the locale, like the process locale itself; that one setting is the only state here.
Both catalogs have exactly the same keys (a unit test checks it).
"""

from __future__ import annotations

from collections.abc import Mapping

LANGUAGES = ("en", "zh_CN")
DEFAULT_LANGUAGE = "en"
LOCALE_VARIABLES = ("LC_ALL", "LC_MESSAGES", "LANG")

EN: dict[str, str] = {
    # application
    "app.name": "Uchat",
    "app.title": "Uchat — secure chat",
    # common
    "common.cancel": "Cancel",
    "common.dismiss": "Dismiss",
    "common.working": "Working…",
    # fields
    "field.username": "Username",
    "field.password": "Password",
    "field.confirm": "Confirm password",
    "field.email": "Email",
    "field.sex": "Sex",
    "field.age": "Age",
    "field.server": "Server",
    "sex.male": "Male",
    "sex.female": "Female",
    "sex.other": "Other",
    # login
    "login.subtitle": "Secure instant messaging for your network",
    "login.submit": "Log in",
    "login.busy": "Logging in…",
    "login.no_account": "No account yet?",
    "login.register_link": "Create one",
    "identity.import_link": "Import identity file from another computer…",
    "identity.export_link": "Export identity for another computer…",
    "identity.passphrase": "Passphrase of the identity file",
    "identity.passphrase_again": "Passphrase again",
    "identity.import_and_login": "Import and log in",
    "identity.choose_file": "Choose your identity file",
    "identity.file_type": "Uchat identity files",
    "identity.chosen": (
        "Identity file: {name}. Type its passphrase, your username and password, then import."
    ),
    "identity.save": "Save identity file…",
    "identity.export_explain": (
        "Your private keys, sealed with a passphrase you choose now. On the other computer, "
        "choose “Import identity file” on the login screen. Keep the file and the passphrase "
        "apart."
    ),
    "identity.saved": "Identity saved to {path}. Only one computer is logged in at a time.",
    "error.passphrase_mismatch": "The two passphrases do not match.",
    "login.server_hint": "host:port — the server's identity is checked on every connection",
    "login.kicked": "You were logged out because your account logged in elsewhere "
    "(from {address}).",
    # register
    "register.window_title": "Uchat — create an account",
    "register.title": "Create your account",
    "register.server": "Server: {server}",
    "register.username_hint": "2 to 32 letters (Chinese too), digits or _",
    "register.password_hint": "At least 8 characters, letters mixed with digits or symbols",
    "register.submit": "Create account",
    "register.busy": "Creating account…",
    "register.logging_in": "Logging in…",
    "register.back": "Back to login",
    # contacts
    "contacts.window_title": "Uchat — {name}",
    "contacts.logout": "Log out",
    "contacts.search_placeholder": "Find people by username",
    "contacts.search": "Search",
    "contacts.searching": "Searching…",
    "contacts.results": "Results for “{query}”: {count}",
    "contacts.no_results": "Nobody found.",
    "contacts.add": "Add",
    "contacts.sending": "Sending…",
    "contacts.request_sent": "Request sent",
    "contacts.state_friend": "Friend",
    "contacts.state_pending": "Request pending",
    "contacts.state_self": "You",
    "contacts.age": "{age} years",
    "contacts.requests_title": "Friend requests",
    "contacts.request_from": "{name} wants to be your friend",
    "contacts.accept": "Accept",
    "contacts.reject": "Reject",
    "contacts.later": "Later",
    "contacts.empty": "No friends or groups yet.\nSearch for people above, or create a group.",
    "contacts.online": "Online",
    "contacts.you": "You",
    "contacts.request_refused": "{name} declined your friend request.",
    "contacts.draft_marker": "[Draft]",
    "contacts.preview_image": "[Image]",
    "contacts.preview_file": "[File]",
    "contacts.preview_sender": "{name}: {text}",
    "contacts.offline": "Offline",
    "contacts.never_seen": "Not seen yet",
    "contacts.group_line": "Group #{number} · {count} members",
    "contacts.key_missing": "This computer does not hold your private keys, so messages "
    "cannot be sent or read here; they wait on the server. To use this computer: log out "
    "here and choose “Link from a computer where you are logged in” on the login screen "
    "(then ⋯ → Link a new computer on the other one), or export the identity there "
    "(⋯ → Export identity) and choose “Import identity file” here.",
    "contacts.key_changed": "Warning: {name}'s security key has changed. "
    "Check the safety number with {name} before you trust it.",
    "contacts.open_chat": "Open chat",
    "connection.connecting": "Connecting…",
    "connection.connected": "Online",
    "connection.reconnecting": "Reconnecting…",
    "connection.disconnected": "Offline — not connected",
    # contact actions
    "action.add_friend.button": "Add friend",
    "action.add_friend.prompt": "Username of the person to add",
    "action.add_friend.confirm": "Send request",
    "action.add_friend.done": "Friend request sent to {name}.",
    "action.add_friend.accepted": "{name} had already asked you: you are friends now.",
    "action.delete_friend.button": "Delete friend",
    "action.delete_friend.prompt": "Username of the friend to delete",
    "action.delete_friend.confirm": "Delete",
    "action.delete_friend.done": "{name} is no longer your friend.",
    "action.create_group.button": "Create group",
    "action.create_group.prompt": "Name of the new group",
    "action.create_group.confirm": "Create",
    "action.create_group.done": "Group “{name}” created. Its number is {number}: "
    "share it so others can join.",
    "action.join_group.button": "Join group",
    "action.join_group.prompt": "Group number",
    "action.join_group.confirm": "Join",
    "action.join_group.done": "You joined “{name}” (#{number}).",
    # chat
    "chat.window_title": "Chat with {name}",
    "chat.search_placeholder": "Search history",
    "chat.search_hits": "{count} message(s) match “{query}”; the newest is highlighted.",
    "main.no_chat": "Choose a chat on the left to start messaging",
    "chat.search_position": "{index} of {count}",
    "chat.new_messages": "{count} new ↓",
    "chat.cancel": "Cancel",
    "chat.emoji": "Emoji",
    "chat.size_limit": "Files up to {limit}",
    "chat.choose_image": "Choose a picture (up to {limit})",
    "chat.choose_file": "Choose a file (up to {limit})",
    "chat.open_folder": "Open folder",
    "chat.open_folder_failed": "Could not open the folder {path}.",
    "chat.leave_group": "Leave group",
    "chat.leave_confirm": "Leave “{name}”? You will no longer receive its messages.",
    "chat.leave_owner_confirm": "You own “{name}”. Choose who owns it after you leave:",
    "chat.leave_hand_over": "Hand over to {name} and leave",
    "chat.delete_friend": "Delete friend",
    "chat.delete_confirm": (
        "Delete {name} from your friends? Your chat history stays on this computer."
    ),
    "viewer.title": "{name} — Uchat",
    "export.choose_folder": "Choose where to save the export",
    "export.running": "Exporting… {done} of {total} messages",
    "export.done": "Exported {count} messages to {path} (history.html and history.json).",
    "export.missing": (
        "{count} attachment(s) were not on this computer and could not be downloaded."
    ),
    "export.this_chat": "Export this chat…",
    "export.all_chats": "Export all chats…",
    "error.attachment_too_large_limit": (
        "The file is too large: the server takes files up to {limit}."
    ),
    "error.upload_cancelled": "The upload was cancelled.",
    "error.invalid_target": "That conversation does not exist.",
    "error.bad_identity_file": (
        "The passphrase does not open this file, or it is not a Uchat identity file."
    ),
    "error.invalid_passphrase": "The passphrase must be at least 8 characters long.",
    "chat.pop_out": "Open in a new window",
    "chat.search_menu": "Search history (Ctrl+F)",
    "chat.search_none": "No message matches “{query}”.",
    "chat.safety_number": "Safety number",
    "chat.safety_text": "Safety number with {name}: {number}\nCompare it with {name} in "
    "person or by phone. If the numbers match, nobody is listening in.",
    "chat.key_changed": "{name}'s security key has changed! Messages from {name} are held "
    "back until you trust the new key. Compare the safety number with {name} first.",
    "chat.key_changed_notice": "⚠ {name}'s security key changed",
    "chat.new_safety_number": "New safety number: {number}",
    "chat.trust_key": "Trust new key",
    "chat.key_trusted": "You trusted {name}'s new key.",
    "chat.kem_key_added": (
        "🔒 {name} added an end-to-end encryption key, signed by {name}'s verified identity "
        "key. This is not a key change: the safety number stays the same."
    ),
    "chat.kem_key_refused": (
        "⚠ The server offered an encryption key for {name} that {name}'s identity key did "
        "not sign. It was refused and is not used."
    ),
    "chat.load_older": "Load earlier messages",
    "chat.beginning": "Beginning of the conversation",
    "chat.font_size": "Size",
    "chat.color": "Colour",
    "chat.image": "Image",
    "chat.file": "File",
    "chat.images": "Images",
    "chat.all_files": "All files",
    "chat.send": "Send",
    "chat.sending": "Sending…",
    "chat.enter_hint": "Enter to send · Shift+Enter for a new line",
    "chat.image_label": "[Image] {name} ({size})",
    "chat.file_label": "[File] {name} ({size})",
    "chat.save": "Save",
    "chat.save_to": "Save the file to…",
    "chat.saved_to": "Saved to {path}",
    "chat.members": "Members ({count})",
    "chat.removed": "You are no longer friends; messages cannot be sent.",
    # signed group membership: one line per verified change, warnings when it fails
    "membership.create": "{actor} created the group",
    "membership.join": "{subject} joined with the group number",
    "membership.join_approved": "{subject} joined, approved by {approver}",
    "membership.leave": "{subject} left the group",
    "membership.remove": "{actor} removed {subject}",
    "membership.grant_admin": "{actor} made {subject} an admin",
    "membership.transfer_owner": "{actor} made {subject} the owner",
    "membership.legacy": "Members from before signed membership, as the server stated "
    "them (not verified by members): {subject}",
    "membership.alarm.invalid_log": "Warning: this group's membership does not verify "
    "({detail}). Nothing is sent to the group until it does.",
    "membership.alarm.gap": "Warning: a membership change of this group is missing: the "
    "server withheld it. Nothing is sent to the group until it arrives.",
    "membership.alarm.rollback": "Warning: the server shows an older membership of this "
    "group than the one you already verified.",
    "membership.alarm.server_list_differs": "Warning: the server's member list is not the "
    "one members signed ({names}). Only signed members get your messages.",
    "members.admin": "admin",
    "members.owner": "owner",
    "members.make_owner": "Make {name} the owner",
    "members.requests": "Waiting to join ({count})",
    "members.approve": "Approve",
    "members.refuse": "Refuse",
    "members.remove": "Remove {name}",
    "members.make_admin": "Make {name} an admin",
    "members.join_requested": "{name} asks to join the group",
    "action.create_group.policy_open": "Anyone with the number can join",
    "action.create_group.policy_approval": "An admin approves each join",
    # time
    "time.yesterday": "Yesterday",
    "time.yesterday_at": "Yesterday {time}",
    # errors: form checks
    "error.required": "This field is required.",
    "error.password_mismatch": "The two passwords do not match.",
    "error.password_is_username": "The password must differ from the username.",
    "error.server_address": "Enter the server as host:port, e.g. 192.168.1.10:9999.",
    "error.server_port": "The port must be a number from 1 to 65535.",
    "error.room_number": "A group number is made of digits, e.g. 12.",
    # errors: connection and security
    "error.connection": "Cannot reach the server at {server}. Check the address and that "
    "the server is running.",
    "error.timeout": "The server did not answer in time. Try again.",
    "error.pin_mismatch": "The server at {server} is not the one this computer knows: its "
    "identity (certificate fingerprint) changed. Someone may be intercepting the "
    "connection, or the server was reinstalled. Ask the administrator for the server's "
    "fingerprint before you continue.",
    "error.handshake": "A secure connection could not be established: {detail}",
    "error.certificate": "The server sent an invalid certificate: {detail}",
    "error.keystore": "Your keys on this computer cannot be opened: {detail}",
    "error.protocol": "The server sent something unexpected. Try again later.",
    "error.unexpected": "Something went wrong. Try again.",
    # errors: server codes (docs/protocol.md) and client refusals
    "error.bad_request": "The request was not understood.",
    "error.not_authenticated": "You are not logged in.",
    "error.internal_error": "The server had a problem. Try again later.",
    "error.server_busy": "The server is busy. Try again in a moment.",
    "error.invalid_username": "Use 2 to 32 letters, digits or underscores.",
    "error.invalid_password": "At least 8 characters, mixing letters with digits or symbols.",
    "error.invalid_email": "Enter a valid email address, like name@example.com.",
    "error.invalid_sex": "Choose male, female or other.",
    "error.invalid_age": "Age must be a whole number from 1 to 150.",
    "error.invalid_csr": "The account keys were refused. Try again.",
    "error.username_taken": "This username is already taken.",
    "error.too_many_friend_requests": "You have too many friend requests waiting. "
    "Wait for answers first.",
    "error.friend_requests_full": "This person has too many friend requests waiting.",
    "error.too_many_rooms": "You have created as many groups as an account may.",
    "error.upload_quota_exceeded": "You keep too many files on the server.",
    "error.recipient_inbox_full": "Too many messages are waiting for this person. "
    "Try again after they log in.",
    "error.username_invisible": "The username contains an invisible character. "
    "Type it again without it.",
    "error.username_confusable": "This username looks like one that already exists. "
    "Choose another.",
    "error.too_many_searches": "Too many searches. Please wait a minute and try again.",
    "error.too_many_joins": "Too many attempts to join groups. Please wait a minute.",
    "error.too_many_registrations": "Too many accounts were created from your network. "
    "Try again later.",
    "error.email_taken": "This email address is already registered.",
    "error.login_failed": "Wrong username or password.",
    "error.too_many_attempts": "Too many failed attempts. Wait a while, then try again.",
    "error.user_not_found": "No user has this name.",
    "error.cannot_add_self": "You cannot add yourself.",
    "error.already_friends": "You are already friends.",
    "error.request_pending": "A friend request is already waiting.",
    "error.no_pending_request": "This request no longer exists.",
    "error.not_friends": "You are not friends with this user.",
    "error.forbidden": "You are not allowed to do that.",
    "error.missing_envelope": "The group changed while sending. Try again.",
    "error.message_too_large": "The message is too large.",
    "error.invalid_room_name": "A group name has 1 to 40 characters.",
    "error.room_name_taken": "A group with this name already exists.",
    "error.room_not_found": "No group has this number.",
    "error.already_member": "You are already in this group.",
    "error.not_member": "You are not a member of this group.",
    "error.attachment_too_large": "The file is larger than the server accepts.",
    "error.too_many_uploads": "Too many unfinished uploads. Let one finish first.",
    "error.room_full": "This group is full.",
    "error.join_pending": "Your request to join was sent to the group's admins.",
    "error.event_refused": "The group does not allow this change.",
    "error.log_moved": "The group changed meanwhile. Try again.",
    "error.membership_unverified": "This group's membership does not verify; nothing is sent.",
    "error.room_number_taken": "That group number is taken. Try again.",
    "error.no_request": "Nobody is waiting to join under this name.",
    "error.bad_event": "The group change was not understood by the server.",
    "error.bad_signature": "The group change is not signed by your key.",
    "error.bad_event_time": "Your computer's clock is far off; correct it and try again.",
    "error.too_many_requests": "This group has too many requests waiting.",
    "error.key_changed": (
        "This friend's key changed. Compare the safety number, then trust the new key."
    ),
    "error.attachment_not_found": "The file is no longer on the server.",
    "error.bad_offset": "The transfer got out of step. Try again.",
    "error.digest_mismatch": "The file was damaged in transit. Try again.",
    "error.empty_message": "There is nothing to send.",
    "error.invalid_font_size": "Choose a font size from 8 to 36.",
    "error.invalid_color": "Choose a valid colour.",
    "error.key_missing": "This computer does not hold your private keys, so it cannot send.",
    "error.upload_busy": "This file is already being sent.",
    "error.no_attachment": "This message has no file.",
    "error.file_not_found": "The file cannot be found.",
    "error.file_changed": "The file changed while it was being sent. Try again.",
    "error.no_key_change": "There is no new key to trust.",
    "error.bad_kem_key": (
        "The server refused this encryption key: it is not signed by your identity key."
    ),
    "error.stale_kem_key": "A newer encryption key is already published for your account.",
    "error.unknown_tree_size": (
        "The server no longer admits to a key log it showed you before. Chat is blocked."
    ),
    "error.key_not_logged": (
        "The server gave this person's key without proof that it is in the public key log. "
        "Chat is blocked: the server may be impersonating them."
    ),
    "error.log_inconsistent": (
        "The server's key log contradicts what you saw before. Chat is blocked: "
        "the server may be showing different keys to different people."
    ),
    "chain.warning.replayed_distribution": (
        "Warning: the server sent {name}'s message key again (a replay). It was ignored; "
        "no message was affected."
    ),
    "chain.warning.bad_distribution": (
        "Warning: a message key from {name} did not verify and was refused."
    ),
    "chain.warning.relabelled": (
        "Warning: the server delivered a message from {name} into the wrong conversation. "
        "It was refused."
    ),
    "chat.flag.gap": "\u26a0 earlier messages from {name} have not arrived",
    "chat.flag.late": "arrived late (after later messages)",
    "chat.flag.skew": "\u26a0 the server says it arrived at {time}",
    "transparency.alarm.foreign_key": (
        "Alarm: the server published a key under your name that none of your computers "
        "made. Someone may be impersonating you. Tell your friends to compare safety numbers."
    ),
    "transparency.alarm.rolled_back": (
        "Alarm: the server showed an older key log than before (rolled back). "
        "Chat is blocked until it shows a log that extends the one you hold."
    ),
    "transparency.alarm.not_extension": (
        "Alarm: the server's key log is not an extension of the one you hold. "
        "It may be showing different keys to different people. Chat is blocked."
    ),
    "transparency.alarm.split_view": (
        "Alarm: {name} was shown a different key log than you (a split view). "
        "The server may be showing different keys to different people."
    ),
    "transparency.alarm.not_logged": (
        "Alarm: the server gave a key for {name} that is not in its public key log. "
        "Chat with {name} is blocked."
    ),
    "transparency.alarm.kem_key_refused": (
        "Alarm: the server gave an encryption key for {name} that {name}'s identity key did "
        "not sign. It was refused and is not used; the server may be trying to read messages "
        "to {name}."
    ),
    "link.new_link": "Link from a computer where you are logged in…",
    "link.new_explain": (
        "Type your username and password above, then press Get code. On your other "
        "computer open ⋯ → Link a new computer and type the code shown here."
    ),
    "link.get_code": "Get code",
    "link.code_is": (
        "On your other computer choose ⋯ → Link a new computer and type this code "
        "(valid {minutes} minutes):"
    ),
    "link.joined": "The computer at {address} entered the code.",
    "link.compare": (
        "Check that the other computer shows the same six digits. If they differ, "
        "someone is in between: press They differ."
    ),
    "link.match": "They match",
    "link.differ": "They differ",
    "link.waiting_other": "Waiting for the other computer to confirm…",
    "link.received": ("Your identity arrived. Logging in here signs out the other computer."),
    "link.old_link": "Link a new computer…",
    "link.old_explain": (
        "On the new computer, choose Link from a computer where you are logged in, "
        "and type here the code it shows. Only type a code from a computer you are "
        "using yourself: whoever shows it receives your identity."
    ),
    "link.code": "Code from the new computer",
    "link.continue": "Continue",
    "link.sent": (
        "Your identity was sent, sealed for the new computer. When it logs in, this "
        "computer is signed out (one login at a time)."
    ),
    "link.code_format": "The code is eight digits, as shown on the new computer.",
    "link.failed.refused": "The codes were marked as different: nothing was sent.",
    "link.failed.cancelled": "The link was cancelled on the other computer.",
    "link.failed.expired": "The code expired. Start again on the new computer.",
    "link.failed.peer_gone": "The other computer went away. Start again.",
    "link.failed.connection_lost": "The connection to the server was lost. Start again.",
    "link.failed.bad_commitment": "The other side changed its key: the link was stopped.",
    "link.failed.bad_seal": "What arrived was tampered with: nothing was kept.",
    "link.failed.wrong_account": "The identity that arrived is for another account: not kept.",
    "link.failed.failed": "The link failed. Start again.",
    "error.link_code_invalid": (
        "This code is wrong, expired or already used. Check it, or start again on the new computer."
    ),
    "error.too_many_links": "Too many link codes were asked for. Please wait a minute.",
    "error.no_link": "There is no link in progress.",
}

ZH_CN: dict[str, str] = {
    "app.name": "Uchat",
    "app.title": "Uchat — 安全聊天",
    "common.cancel": "取消",
    "common.dismiss": "关闭",
    "common.working": "处理中…",
    "field.username": "用户名",
    "field.password": "密码",
    "field.confirm": "确认密码",
    "field.email": "邮箱",
    "field.sex": "性别",
    "field.age": "年龄",
    "field.server": "服务器",
    "sex.male": "男",
    "sex.female": "女",
    "sex.other": "其他",
    "login.subtitle": "局域网内的安全即时通讯",
    "login.submit": "登录",
    "login.busy": "正在登录…",
    "login.no_account": "还没有账号？",
    "login.register_link": "立即注册",
    "identity.import_link": "从另一台电脑导入身份文件……",
    "identity.export_link": "导出身份（用于另一台电脑）……",
    "identity.passphrase": "身份文件的口令",
    "identity.passphrase_again": "再次输入口令",
    "identity.import_and_login": "导入并登录",
    "identity.choose_file": "选择您的身份文件",
    "identity.file_type": "Uchat 身份文件",
    "identity.chosen": "身份文件：{name}。请输入它的口令以及您的用户名和密码，然后导入。",
    "identity.save": "保存身份文件……",
    "identity.export_explain": (
        "您的私钥将用您现在设置的口令加密保存。在另一台电脑的登录界面选择“导入身份文件”。请将文"
        "件与口令分开保管。"
    ),
    "identity.saved": "身份已保存到 {path}。同一时间只能有一台电脑登录。",
    "error.passphrase_mismatch": "两次输入的口令不一致。",
    "login.server_hint": "主机:端口 — 每次连接都会核验服务器身份",
    "login.kicked": "您的账号已在别处登录（来自 {address}），本机已下线。",
    "register.window_title": "Uchat — 注册账号",
    "register.title": "注册新账号",
    "register.server": "服务器：{server}",
    "register.username_hint": "2 到 32 个字母（可用中文）、数字或下划线",
    "register.password_hint": "至少 8 个字符，需同时包含字母和数字或符号",
    "register.submit": "注册",
    "register.busy": "正在注册…",
    "register.logging_in": "正在登录…",
    "register.back": "返回登录",
    "contacts.window_title": "Uchat — {name}",
    "contacts.logout": "退出登录",
    "contacts.search_placeholder": "按用户名查找用户",
    "contacts.search": "搜索",
    "contacts.searching": "搜索中…",
    "contacts.results": "“{query}”的搜索结果：{count} 个",
    "contacts.no_results": "没有找到用户。",
    "contacts.add": "添加",
    "contacts.sending": "发送中…",
    "contacts.request_sent": "已发送请求",
    "contacts.state_friend": "已是好友",
    "contacts.state_pending": "等待验证",
    "contacts.state_self": "我自己",
    "contacts.age": "{age} 岁",
    "contacts.requests_title": "好友请求",
    "contacts.request_from": "{name} 请求添加您为好友",
    "contacts.accept": "同意",
    "contacts.reject": "拒绝",
    "contacts.later": "稍后",
    "contacts.empty": "还没有好友或群聊。\n在上方搜索用户，或创建一个群聊。",
    "contacts.online": "在线",
    "contacts.you": "我",
    "contacts.request_refused": "{name} 拒绝了您的好友请求。",
    "contacts.draft_marker": "[草稿]",
    "contacts.preview_image": "[图片]",
    "contacts.preview_file": "[文件]",
    "contacts.preview_sender": "{name}：{text}",
    "contacts.offline": "离线",
    "contacts.never_seen": "尚未上线",
    "contacts.group_line": "群号 {number} · {count} 位成员",
    "contacts.key_missing": "本机没有您的私钥，因此无法在这里收发消息，消息会保留在服务器上。"
    "要在本机使用：请在本机退出登录，并在登录界面选择“从已登录的电脑关联本机”"
    "（然后在另一台电脑上选择 ⋯ → 关联新电脑）；或在另一台电脑上导出身份（⋯ → 导出身份），"
    "再在本机选择“导入身份文件”。",
    "contacts.key_changed": "警告：{name} 的安全密钥已更改。信任之前请先与 {name} 核对安全码。",
    "contacts.open_chat": "打开聊天",
    "connection.connecting": "正在连接…",
    "connection.connected": "在线",
    "connection.reconnecting": "正在重新连接…",
    "connection.disconnected": "离线 — 未连接",
    "action.add_friend.button": "添加好友",
    "action.add_friend.prompt": "要添加的用户名",
    "action.add_friend.confirm": "发送请求",
    "action.add_friend.done": "已向 {name} 发送好友请求。",
    "action.add_friend.accepted": "{name} 已向您发出过请求：你们现在是好友了。",
    "action.delete_friend.button": "删除好友",
    "action.delete_friend.prompt": "要删除的好友用户名",
    "action.delete_friend.confirm": "删除",
    "action.delete_friend.done": "已将 {name} 从好友中删除。",
    "action.create_group.button": "创建群聊",
    "action.create_group.prompt": "新群聊的名称",
    "action.create_group.confirm": "创建",
    "action.create_group.done": "群聊“{name}”已创建，群号为 {number}。把群号告诉别人即可加入。",
    "action.join_group.button": "加入群聊",
    "action.join_group.prompt": "群号",
    "action.join_group.confirm": "加入",
    "action.join_group.done": "已加入“{name}”（群号 {number}）。",
    "chat.window_title": "与 {name} 聊天",
    "chat.search_placeholder": "搜索聊天记录",
    "chat.search_hits": "有 {count} 条消息包含“{query}”，已高亮最新一条。",
    "main.no_chat": "在左侧选择一个会话开始聊天",
    "chat.search_position": "第 {index} 条，共 {count} 条",
    "chat.new_messages": "{count} 条新消息 ↓",
    "chat.cancel": "取消",
    "chat.emoji": "表情",
    "chat.size_limit": "文件最大 {limit}",
    "chat.choose_image": "选择图片（最大 {limit}）",
    "chat.choose_file": "选择文件（最大 {limit}）",
    "chat.open_folder": "打开文件夹",
    "chat.open_folder_failed": "无法打开文件夹 {path}。",
    "chat.leave_group": "退出群聊",
    "chat.leave_confirm": "确定退出“{name}”吗？退出后将不再收到该群的消息。",
    "chat.leave_owner_confirm": "你是“{name}”的群主。退出前请选择新群主：",
    "chat.leave_hand_over": "转让给 {name} 并退出",
    "chat.delete_friend": "删除好友",
    "chat.delete_confirm": "确定将 {name} 从好友中删除吗？本机的聊天记录会保留。",
    "viewer.title": "{name} — Uchat",
    "export.choose_folder": "选择导出文件的保存位置",
    "export.running": "正在导出…… 已完成 {done}/{total} 条消息",
    "export.done": "已将 {count} 条消息导出到 {path}（history.html 和 history.json）。",
    "export.missing": "有 {count} 个附件不在本机且无法下载。",
    "export.this_chat": "导出此会话……",
    "export.all_chats": "导出全部会话……",
    "error.attachment_too_large_limit": "文件太大：服务器只接受不超过 {limit} 的文件。",
    "error.upload_cancelled": "已取消上传。",
    "error.invalid_target": "该会话不存在。",
    "error.bad_identity_file": "口令无法打开此文件，或它不是 Uchat 身份文件。",
    "error.invalid_passphrase": "口令至少需要 8 个字符。",
    "chat.pop_out": "在新窗口中打开",
    "chat.search_menu": "搜索聊天记录（Ctrl+F）",
    "chat.search_none": "没有消息包含“{query}”。",
    "chat.safety_number": "安全码",
    "chat.safety_text": "您与 {name} 的安全码：{number}\n请当面或通过电话与 {name} 核对。"
    "若数字一致，说明没有人在窃听。",
    "chat.key_changed": "{name} 的安全密钥已更改！在您信任新密钥之前，来自 {name} 的消息"
    "将被暂时保留。请先与 {name} 核对安全码。",
    "chat.key_changed_notice": "⚠ {name} 的安全密钥已更改",
    "chat.new_safety_number": "新的安全码：{number}",
    "chat.trust_key": "信任新密钥",
    "chat.key_trusted": "您已信任 {name} 的新密钥。",
    "chat.kem_key_added": (
        "🔒 {name} 添加了端到端加密密钥，并由 {name} 已验证的身份密钥签名。"
        "这不是密钥更换：安全码保持不变。"
    ),
    "chat.kem_key_refused": (
        "⚠ 服务器提供了一个 {name} 的加密密钥，但它没有由 {name} 的身份密钥签名。"
        "该密钥已被拒绝，不会被使用。"
    ),
    "chat.load_older": "加载更早的消息",
    "chat.beginning": "已到达对话开头",
    "chat.font_size": "字号",
    "chat.color": "颜色",
    "chat.image": "图片",
    "chat.file": "文件",
    "chat.images": "图片",
    "chat.all_files": "所有文件",
    "chat.send": "发送",
    "chat.sending": "发送中…",
    "chat.enter_hint": "Enter 发送 · Shift+Enter 换行",
    "chat.image_label": "[图片] {name}（{size}）",
    "chat.file_label": "[文件] {name}（{size}）",
    "chat.save": "保存",
    "chat.save_to": "将文件保存到…",
    "chat.saved_to": "已保存到 {path}",
    "chat.members": "成员（{count}）",
    "chat.removed": "你们已不再是好友，无法发送消息。",
    "membership.create": "{actor} 创建了群聊",
    "membership.join": "{subject} 通过群号加入了群聊",
    "membership.join_approved": "{subject} 加入了群聊，由 {approver} 批准",
    "membership.leave": "{subject} 退出了群聊",
    "membership.remove": "{actor} 将 {subject} 移出了群聊",
    "membership.grant_admin": "{actor} 将 {subject} 设为管理员",
    "membership.transfer_owner": "{actor} 将群主转让给了 {subject}",
    "membership.legacy": "签名成员制度之前的成员（由服务器声明，未经成员验证）：{subject}",
    "membership.alarm.invalid_log": "警告：本群的成员记录无法通过验证（{detail}）。"
    "在通过验证之前，不会向本群发送任何消息。",
    "membership.alarm.gap": "警告：本群缺少一条成员变更记录，服务器扣留了它。"
    "在它到达之前，不会向本群发送任何消息。",
    "membership.alarm.rollback": "警告：服务器显示的本群成员比您已验证的更旧。",
    "membership.alarm.server_list_differs": "警告：服务器的成员列表与成员签名的不一致"
    "（{names}）。只有签名的成员会收到您的消息。",
    "members.admin": "管理员",
    "members.owner": "群主",
    "members.make_owner": "将群主转让给 {name}",
    "members.requests": "等待加入（{count}）",
    "members.approve": "批准",
    "members.refuse": "拒绝",
    "members.remove": "移出 {name}",
    "members.make_admin": "设 {name} 为管理员",
    "members.join_requested": "{name} 申请加入本群",
    "action.create_group.policy_open": "任何知道群号的人都可以加入",
    "action.create_group.policy_approval": "每次加入都需管理员批准",
    "time.yesterday": "昨天",
    "time.yesterday_at": "昨天 {time}",
    "error.required": "此项不能为空。",
    "error.password_mismatch": "两次输入的密码不一致。",
    "error.password_is_username": "密码不能与用户名相同。",
    "error.server_address": "请按“主机:端口”填写服务器，例如 192.168.1.10:9999。",
    "error.server_port": "端口必须是 1 到 65535 之间的数字。",
    "error.room_number": "群号由数字组成，例如 12。",
    "error.connection": "无法连接到服务器 {server}。请检查地址并确认服务器正在运行。",
    "error.timeout": "服务器未及时响应，请重试。",
    "error.pin_mismatch": "{server} 上的服务器与本机记录的不一致：它的身份（证书指纹）"
    "发生了变化。可能有人在拦截连接，也可能是服务器被重新安装。继续之前请向管理员"
    "核实服务器指纹。",
    "error.handshake": "无法建立安全连接：{detail}",
    "error.certificate": "服务器发送的证书无效：{detail}",
    "error.keystore": "无法打开本机保存的密钥：{detail}",
    "error.protocol": "服务器返回了意外的数据，请稍后重试。",
    "error.unexpected": "出现错误，请重试。",
    "error.bad_request": "请求无法识别。",
    "error.not_authenticated": "您尚未登录。",
    "error.internal_error": "服务器出现问题，请稍后重试。",
    "error.server_busy": "服务器繁忙，请稍后重试。",
    "error.invalid_username": "请使用 2 到 32 个字母、数字或下划线。",
    "error.invalid_password": "至少 8 个字符，需同时包含字母和数字或符号。",
    "error.invalid_email": "请输入有效的邮箱地址，例如 name@example.com。",
    "error.invalid_sex": "请选择男、女或其他。",
    "error.invalid_age": "年龄必须是 1 到 150 之间的整数。",
    "error.invalid_csr": "账号密钥被拒绝，请重试。",
    "error.username_taken": "该用户名已被占用。",
    "error.too_many_friend_requests": "您发出的好友请求太多，请等待对方回复。",
    "error.friend_requests_full": "对方待处理的好友请求太多。",
    "error.too_many_rooms": "您创建的群组数量已达上限。",
    "error.upload_quota_exceeded": "您在服务器上保存的文件太多。",
    "error.recipient_inbox_full": "对方待接收的消息太多，请等对方登录后再试。",
    "error.username_invisible": "用户名中含有不可见字符，请删除后重新输入。",
    "error.username_confusable": "该用户名与已有用户名过于相似，请换一个。",
    "error.too_many_searches": "搜索过于频繁，请稍等一分钟再试。",
    "error.too_many_joins": "加入群聊的尝试过多，请稍等一分钟。",
    "error.too_many_registrations": "您的网络创建的账号过多，请稍后再试。",
    "error.email_taken": "该邮箱已被注册。",
    "error.login_failed": "用户名或密码错误。",
    "error.too_many_attempts": "失败次数过多，请稍后再试。",
    "error.user_not_found": "用户名不存在。",
    "error.cannot_add_self": "不能添加自己为好友。",
    "error.already_friends": "你们已经是好友了。",
    "error.request_pending": "好友请求已发送，正在等待对方处理。",
    "error.no_pending_request": "该好友请求已不存在。",
    "error.not_friends": "该用户还不是您的好友。",
    "error.forbidden": "您无权执行此操作。",
    "error.missing_envelope": "发送期间群成员发生了变化，请重试。",
    "error.message_too_large": "消息太大。",
    "error.invalid_room_name": "群名称需为 1 到 40 个字符。",
    "error.room_name_taken": "已存在同名群聊。",
    "error.room_not_found": "群聊不存在。",
    "error.already_member": "您已经在该群聊中了。",
    "error.not_member": "您不是该群聊的成员。",
    "error.attachment_too_large": "文件超过了服务器允许的大小。",
    "error.too_many_uploads": "未完成的上传太多，请等其中一个完成。",
    "error.room_full": "该群聊人数已满。",
    "error.join_pending": "您的加群申请已发送给群管理员。",
    "error.event_refused": "本群不允许此变更。",
    "error.log_moved": "群聊刚刚有了变化，请重试。",
    "error.membership_unverified": "本群成员无法通过验证，不会发送任何消息。",
    "error.room_number_taken": "该群号已被占用，请重试。",
    "error.no_request": "没有此用户的加群申请。",
    "error.bad_event": "服务器无法理解此群聊变更。",
    "error.bad_signature": "此群聊变更不是由您的密钥签名的。",
    "error.bad_event_time": "您的电脑时钟偏差太大，请校正后重试。",
    "error.too_many_requests": "本群等待处理的申请太多。",
    "error.key_changed": "该好友的密钥已更换。请先核对安全码，再信任新密钥后继续。",
    "error.attachment_not_found": "服务器上已没有这个文件。",
    "error.bad_offset": "传输不同步，请重试。",
    "error.digest_mismatch": "文件在传输中损坏，请重试。",
    "error.empty_message": "没有可发送的内容。",
    "error.invalid_font_size": "请选择 8 到 36 之间的字号。",
    "error.invalid_color": "请选择有效的颜色。",
    "error.key_missing": "本机没有您的私钥，无法发送消息。",
    "error.upload_busy": "该文件正在发送中。",
    "error.no_attachment": "这条消息没有附件。",
    "error.file_not_found": "找不到该文件。",
    "error.file_changed": "文件在发送过程中被修改，请重试。",
    "error.no_key_change": "没有需要信任的新密钥。",
    "error.bad_kem_key": "服务器拒绝了此加密密钥：它没有由您的身份密钥签名。",
    "error.stale_kem_key": "您的账户已经发布了更新的加密密钥。",
    "error.unknown_tree_size": "服务器不再承认它之前给您看过的密钥日志。聊天已被阻止。",
    "error.key_not_logged": (
        "服务器给出的此人密钥没有公开密钥日志的证明。聊天已被阻止：服务器可能在冒充此人。"
    ),
    "error.log_inconsistent": (
        "服务器的密钥日志与您之前看到的相矛盾。聊天已被阻止：服务器可能在向不同的人展示不同的密钥。"
    ),
    "chain.warning.replayed_distribution": (
        "警告：服务器再次发送了 {name} 的消息密钥（重放）。已忽略，没有消息受到影响。"
    ),
    "chain.warning.bad_distribution": "警告：来自 {name} 的一个消息密钥未通过验证，已拒绝。",
    "chain.warning.relabelled": "警告：服务器把 {name} 的一条消息投递到了错误的会话中，已拒绝。",
    "chat.flag.gap": "\u26a0 {name} 之前的消息尚未到达",
    "chat.flag.late": "迟到（晚于之后的消息到达）",
    "chat.flag.skew": "\u26a0 服务器称其到达时间为 {time}",
    "transparency.alarm.foreign_key": (
        "警报：服务器以您的名义发布了一个不是由您的任何电脑生成的密钥。可能有人在冒充您。"
        "请让好友核对安全码。"
    ),
    "transparency.alarm.rolled_back": (
        "警报：服务器展示了比之前更旧的密钥日志（被回滚）。在它展示延续您所持日志的版本之前，聊天已被阻止。"
    ),
    "transparency.alarm.not_extension": (
        "警报：服务器的密钥日志不是您所持日志的延续。它可能在向不同的人展示不同的密钥。聊天已被阻止。"
    ),
    "transparency.alarm.split_view": (
        "警报：{name} 看到的密钥日志与您的不同（分裂视图）。服务器可能在向不同的人展示不同的密钥。"
    ),
    "transparency.alarm.not_logged": (
        "警报：服务器给出的 {name} 的密钥不在其公开密钥日志中。与 {name} 的聊天已被阻止。"
    ),
    "transparency.alarm.kem_key_refused": (
        "警报：服务器给出的 {name} 的加密密钥没有由 {name} 的身份密钥签名。"
        "该密钥已被拒绝，不会被使用；服务器可能在试图读取发给 {name} 的消息。"
    ),
    "link.new_link": "从已登录的电脑关联本机……",
    "link.new_explain": (
        "请在上方输入用户名和密码，然后点击“获取代码”。在另一台电脑上打开 ⋯ → "
        "关联新电脑，并输入这里显示的代码。"
    ),
    "link.get_code": "获取代码",
    "link.code_is": "请在另一台电脑上选择 ⋯ → 关联新电脑，并输入此代码（{minutes} 分钟内有效）：",
    "link.joined": "地址为 {address} 的电脑已输入代码。",
    "link.compare": (
        "请确认另一台电脑显示相同的六位数字。如果不同，说明有人在中间，请点击“不一致”"
    ),
    "link.match": "一致",
    "link.differ": "不一致",
    "link.waiting_other": "正在等待另一台电脑确认……",
    "link.received": "您的身份已到达。在本机登录会使另一台电脑退出登录。",
    "link.old_link": "关联新电脑……",
    "link.old_explain": (
        "在新电脑上选择“从已登录的电脑关联本机”，并在这里输入它显示的代码。"
        "只输入您自己正在使用的电脑上显示的代码：显示代码的一方将收到您的身份。"
    ),
    "link.code": "新电脑上的代码",
    "link.continue": "继续",
    "link.sent": (
        "您的身份已加密发送给新电脑。新电脑登录后，本机将退出登录（同一时间只能登录一台）。"
    ),
    "link.code_format": "代码为八位数字，与新电脑上显示的一致。",
    "link.failed.refused": "已确认代码不一致：没有发送任何内容。",
    "link.failed.cancelled": "另一台电脑取消了关联。",
    "link.failed.expired": "代码已过期。请在新电脑上重新开始。",
    "link.failed.peer_gone": "另一台电脑已离开。请重新开始。",
    "link.failed.connection_lost": "与服务器的连接已断开。请重新开始。",
    "link.failed.bad_commitment": "对方更换了密钥：关联已停止。",
    "link.failed.bad_seal": "收到的内容被篡改：未保留任何内容。",
    "link.failed.wrong_account": "收到的身份属于另一个账户：未保留。",
    "link.failed.failed": "关联失败。请重新开始。",
    "error.link_code_invalid": "代码错误、已过期或已被使用。请检查，或在新电脑上重新开始。",
    "error.too_many_links": "请求关联代码的次数过多，请稍等一分钟。",
    "error.no_link": "当前没有进行中的关联。",
}

CATALOGS: Mapping[str, Mapping[str, str]] = {"en": EN, "zh_CN": ZH_CN}


def detect_language(setting: str, environ: Mapping[str, str]) -> str:
    """`en` / `zh_CN` as configured; for `auto` the first set locale variable decides."""
    if setting in CATALOGS:
        return setting
    for name in LOCALE_VARIABLES:
        value = environ.get(name, "")
        if value:
            return "zh_CN" if value.lower().startswith("zh") else DEFAULT_LANGUAGE
    return DEFAULT_LANGUAGE


class Translator:
    """Looks keys up in one catalog, falling back to English, then to the key itself."""

    def __init__(self, language: str = DEFAULT_LANGUAGE) -> None:
        self.language = DEFAULT_LANGUAGE
        self.use(language)

    def use(self, language: str) -> None:
        if language not in CATALOGS:
            raise ValueError(f"unsupported language {language!r}; choose {', '.join(LANGUAGES)}")
        self.language = language

    def has(self, key: str) -> bool:
        return key in CATALOGS[self.language] or key in EN

    def t(self, key: str, **params: object) -> str:
        text = CATALOGS[self.language].get(key) or EN.get(key) or key
        return text.format(**params) if params else text


_translator = Translator()


def use_language(language: str) -> None:
    """Switch the process's display language (at start-up, before any window)."""
    _translator.use(language)


def current_language() -> str:
    return _translator.language


def t(key: str, **params: object) -> str:
    return _translator.t(key, **params)


def has(key: str) -> bool:
    return _translator.has(key)
