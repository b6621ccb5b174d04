"""The look of the client: one palette, one CJK-capable font family, ttk styles.

Pure choices (palette, font pick, avatar colours) are plain functions so they can be
tested without a display; `apply_theme` is the only part that touches Tk.
"""

from __future__ import annotations

import hashlib
import tkinter as tk
import tkinter.font as tkfont
from collections.abc import Iterable
from dataclasses import dataclass
from tkinter import ttk
from typing import Any

# Families with good Chinese coverage first, then clean Latin fallbacks; Tk's fontconfig
# fallback fills missing glyphs, but a CJK family keeps both scripts the same weight.
PREFERRED_FAMILIES = (
    "Noto Sans CJK SC",
    "Source Han Sans SC",
    "WenQuanYi Zen Hei",
    "WenQuanYi Micro Hei",
    "Microsoft YaHei UI",
    "Microsoft YaHei",
    "PingFang SC",
    "Hiragino Sans GB",
    "Noto Sans",
    "DejaVu Sans",
    "Segoe UI",
    "Helvetica",
)

AVATAR_COLORS = (
    "#5b8def",
    "#f08c4a",
    "#43b581",
    "#9b6bd6",
    "#e5588f",
    "#2fb5c4",
    "#d9a420",
    "#6f7d95",
)


@dataclass(frozen=True)
class Palette:
    """Colours used everywhere; names say what they are for, not what they look like."""

    window: str = "#f3f5f9"
    surface: str = "#ffffff"
    surface_alt: str = "#f8f9fc"
    button: str = "#edf0f5"
    button_active: str = "#e1e6ef"
    scroll_thumb: str = "#cdd4df"
    hover: str = "#eef3fd"
    selected: str = "#e3ecfd"
    border: str = "#dfe3ea"
    text: str = "#1f2328"
    muted: str = "#6b7280"
    subtle: str = "#9aa3b2"
    primary: str = "#2f6fed"
    primary_active: str = "#2459c8"
    primary_text: str = "#ffffff"
    header: str = "#2f6fed"
    header_text: str = "#ffffff"
    header_muted: str = "#d6e2fb"
    header_button: str = "#4a82f0"
    header_button_active: str = "#6394f3"
    online: str = "#2fb344"
    offline: str = "#b8bfca"
    badge: str = "#f0443a"
    badge_text: str = "#ffffff"
    error: str = "#d92d20"
    success: str = "#18794e"
    warning_bg: str = "#fff1f0"
    warning_border: str = "#f5a8a3"
    warning_text: str = "#a8071a"
    notice_bg: str = "#fff8e6"
    notice_text: str = "#8a5a00"
    link: str = "#2f6fed"
    outgoing_name: str = "#2f6fed"


@dataclass(frozen=True)
class Fonts:
    """Font descriptions as Tk accepts them: (family, size[, style])."""

    family: str
    base_size: int = 11

    @property
    def body(self) -> tuple[str, int]:
        return (self.family, self.base_size)

    @property
    def small(self) -> tuple[str, int]:
        return (self.family, self.base_size - 1)

    @property
    def bold(self) -> tuple[str, int, str]:
        return (self.family, self.base_size, "bold")

    @property
    def heading(self) -> tuple[str, int, str]:
        return (self.family, self.base_size + 3, "bold")

    @property
    def title(self) -> tuple[str, int, str]:
        return (self.family, self.base_size + 9, "bold")

    @property
    def button(self) -> tuple[str, int, str]:
        return (self.family, self.base_size, "bold")

    def sized(self, size: int, bold: bool = False) -> tuple[str, int] | tuple[str, int, str]:
        return (self.family, size, "bold") if bold else (self.family, size)


BASE_SCALING = 96 / 72  # Tk's pixels per point on a 96 dpi screen


@dataclass(frozen=True)
class Theme:
    palette: Palette
    fonts: Fonts
    pad: int = 12  # the one spacing unit; small gaps are pad // 2
    scale: float = 1.0  # this screen's Tk scaling relative to 96 dpi (2.0 at 192 dpi)

    def px(self, pixels: float) -> int:
        """A length given for a 96 dpi screen, in this screen's pixels."""
        return max(1, round(pixels * self.scale))


def screen_scale(root: tk.Misc) -> float:
    """Tk scaling relative to 96 dpi: fonts in points grow with it, so must pixel sizes."""
    return max(0.5, float(root.tk.call("tk", "scaling")) / BASE_SCALING)


def pick_font_family(
    available: Iterable[str], preferred: Iterable[str] = PREFERRED_FAMILIES
) -> str:
    """The first preferred family that is installed, else "TkDefaultFont"'s own family."""
    installed = {name.casefold(): name for name in available}
    for family in preferred:
        found = installed.get(family.casefold())
        if found is not None:
            return found
    return ""


def avatar_color(name: str) -> str:
    """A stable colour per name, so people recognise each other at a glance."""
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return AVATAR_COLORS[digest[0] % len(AVATAR_COLORS)]


def initial(name: str) -> str:
    """The avatar letter: the first visible character, upper-cased."""
    stripped = name.strip()
    return stripped[:1].upper() if stripped else "?"


def apply_theme(root: tk.Misc, base_size: int = 11) -> Theme:
    """Configure named fonts and ttk styles on `root`; returns the theme for widgets."""
    family = pick_font_family(tkfont.families(root)) or str(
        tkfont.nametofont("TkDefaultFont", root).actual("family")
    )
    scale = screen_scale(root)
    theme = Theme(Palette(), Fonts(family, base_size), pad=round(12 * scale), scale=scale)
    _configure_named_fonts(root, theme.fonts)
    if isinstance(root, tk.Tk):
        root.configure(background=theme.palette.window)
    root.option_add("*selectBackground", theme.palette.primary)
    root.option_add("*selectForeground", theme.palette.primary_text)
    _configure_styles(ttk.Style(root), theme)
    return theme


def _configure_named_fonts(root: tk.Misc, fonts: Fonts) -> None:
    sizes = {
        "TkDefaultFont": fonts.base_size,
        "TkTextFont": fonts.base_size,
        "TkMenuFont": fonts.base_size,
        "TkHeadingFont": fonts.base_size,
        "TkCaptionFont": fonts.base_size + 1,
        "TkTooltipFont": fonts.base_size - 1,
        "TkSmallCaptionFont": fonts.base_size - 2,
        "TkIconFont": fonts.base_size,
    }
    for name, size in sizes.items():
        try:
            tkfont.nametofont(name, root).configure(family=fonts.family, size=size)
        except tk.TclError:
            continue


def _configure_styles(style: ttk.Style, theme: Theme) -> None:
    p, f = theme.palette, theme.fonts
    style.theme_use("clam")
    style.configure(".", background=p.window, foreground=p.text, font=f.body)
    style.configure("TFrame", background=p.window)
    style.configure("Surface.TFrame", background=p.surface)
    style.configure("Header.TFrame", background=p.header)
    style.configure("TLabel", background=p.window, foreground=p.text)
    style.configure("Surface.TLabel", background=p.surface)
    style.configure("Title.TLabel", font=f.title, foreground=p.text)
    style.configure("Heading.TLabel", font=f.heading, background=p.surface)
    style.configure("Muted.TLabel", foreground=p.muted, font=f.small)
    style.configure("SurfaceMuted.TLabel", foreground=p.muted, background=p.surface, font=f.small)
    style.configure("Field.TLabel", foreground=p.text, background=p.surface, font=f.bold)
    style.configure("Error.TLabel", foreground=p.error, background=p.surface, font=f.small)
    style.configure("Success.TLabel", foreground=p.success, background=p.surface, font=f.small)
    style.configure("Header.TLabel", background=p.header, foreground=p.header_text, font=f.heading)
    style.configure("HeaderMuted.TLabel", background=p.header, foreground=p.header_muted)
    _button_styles(style, theme)
    _input_styles(style, theme)
    style.configure(
        "TProgressbar",
        troughcolor=p.border,
        background=p.primary,
        bordercolor=p.border,
        lightcolor=p.primary,
        darkcolor=p.primary,
        thickness=theme.px(6),
    )
    style.configure(
        "Vertical.TScrollbar",
        background=p.scroll_thumb,
        troughcolor=p.surface,
        bordercolor=p.surface,
        arrowcolor=p.muted,
        lightcolor=p.scroll_thumb,
        darkcolor=p.scroll_thumb,
        gripcount=0,
        arrowsize=theme.px(12),
    )
    style.map("Vertical.TScrollbar", background=[("active", "#b4bdcb")])
    style.configure("TSeparator", background=p.border)


def _button_styles(style: ttk.Style, theme: Theme) -> None:
    """One builder per button family, so each look can be read (and changed) on its own."""
    _primary_button_style(style, theme)
    _plain_button_style(style, theme)
    _danger_button_style(style, theme)
    _link_button_style(style, theme)
    _header_button_style(style, theme)
    _tool_button_style(style, theme)


def _flat_edges(color: str) -> dict[str, str]:
    """clam draws a 3D bevel from these three; one colour for all makes the button flat."""
    return {"bordercolor": color, "lightcolor": color, "darkcolor": color}


def _primary_button_style(style: ttk.Style, theme: Theme) -> None:
    p, f, pad = theme.palette, theme.fonts, theme.pad
    style.configure(
        "Primary.TButton",
        background=p.primary,
        foreground=p.primary_text,
        padding=(pad + 6, pad // 2 + 2),
        font=f.button,
        borderwidth=0,
        focusthickness=0,
        relief="flat",
        **_flat_edges(p.primary),
    )
    style.map(
        "Primary.TButton",
        background=[
            ("disabled", "#9db8f2"),
            ("pressed", p.primary_active),
            ("active", p.primary_active),
        ],
        foreground=[("disabled", "#eef3fd")],
    )


def _plain_button_style(style: ttk.Style, theme: Theme) -> None:
    p, f, pad = theme.palette, theme.fonts, theme.pad
    style.configure(
        "TButton",
        background=p.button,
        foreground=p.text,
        padding=(pad, pad // 2),
        font=f.body,
        relief="flat",
        borderwidth=1,
        focusthickness=0,
        **_flat_edges(p.button),
    )
    style.map(
        "TButton",
        background=[
            ("disabled", p.surface_alt),
            ("pressed", p.selected),
            ("active", p.button_active),
        ],
        foreground=[("disabled", p.subtle)],
    )


def _danger_button_style(style: ttk.Style, theme: Theme) -> None:
    p, f, pad = theme.palette, theme.fonts, theme.pad
    style.configure(
        "Danger.TButton",
        background=p.warning_bg,
        foreground=p.error,
        padding=(pad, pad // 2),
        font=f.body,
        **_flat_edges(p.warning_bg),
    )
    style.map("Danger.TButton", background=[("active", "#fde2e0")])


def _link_button_style(style: ttk.Style, theme: Theme) -> None:
    p, f = theme.palette, theme.fonts
    style.configure(
        "Link.TButton",
        background=p.surface,
        foreground=p.link,
        padding=(2, 2),
        font=f.body,
        relief="flat",
        borderwidth=0,
        **_flat_edges(p.surface),
    )
    style.map(
        "Link.TButton",
        foreground=[("active", p.primary_active)],
        background=[("active", p.surface)],
    )


def _header_button_style(style: ttk.Style, theme: Theme) -> None:
    p, f, pad = theme.palette, theme.fonts, theme.pad
    style.configure(
        "Header.TButton",
        background=p.header_button,
        foreground=p.header_text,
        padding=(pad - 2, pad // 2 - 2),
        font=f.small,
        borderwidth=0,
        width=0,
        **_flat_edges(p.header_button),
    )
    style.map("Header.TButton", background=[("active", p.header_button_active)])


def _tool_button_style(style: ttk.Style, theme: Theme) -> None:
    p, f, pad = theme.palette, theme.fonts, theme.pad
    style.configure(
        "Tool.TButton",
        background=p.button,
        foreground=p.text,
        padding=(pad - 4, 3),
        font=f.small,
        width=0,
        **_flat_edges(p.button),
    )
    style.map(
        "Tool.TButton",
        background=[("active", p.button_active), ("disabled", p.surface_alt)],
        foreground=[("disabled", p.subtle)],
    )
    _menu_button_style(style, "Tool.TMenubutton", p.button, p.button_active, p.text, theme)
    _menu_button_style(
        style, "Header.TMenubutton", p.header_button, p.header_button_active, p.header_text, theme
    )


def _menu_button_style(
    style: ttk.Style, name: str, background: str, active: str, foreground: str, theme: Theme
) -> None:
    """A "⋯" menu button that looks like the buttons beside it: flat, no arrow."""
    style.layout(
        name,
        [
            (
                "Menubutton.border",
                {
                    "sticky": "nswe",
                    "children": [
                        (
                            "Menubutton.padding",
                            {"sticky": "nswe", "children": [("Menubutton.label", {"sticky": ""})]},
                        )
                    ],
                },
            )
        ],
    )
    style.configure(
        name,
        background=background,
        foreground=foreground,
        padding=(theme.pad - 4, 3),
        font=theme.fonts.small,
        width=0,
        **_flat_edges(background),
    )
    style.map(name, background=[("active", active)])


def _input_styles(style: ttk.Style, theme: Theme) -> None:
    p, f, pad = theme.palette, theme.fonts, theme.pad
    field: dict[str, Any] = {
        "fieldbackground": p.surface,
        "foreground": p.text,
        "bordercolor": p.border,
        "lightcolor": p.surface,
        "darkcolor": p.surface,
        "insertcolor": p.text,
        "padding": (pad // 2, pad // 2 - 1),
    }
    focus: dict[str, Any] = {
        "bordercolor": [("focus", p.primary)],
        "lightcolor": [("focus", p.primary)],
    }
    for name in ("TEntry", "TCombobox", "TSpinbox"):
        style.configure(name, **field)
        style.map(name, **focus)
    style.configure("Invalid.TEntry", **{**field, "bordercolor": p.error, "lightcolor": p.error})
    style.map(
        "TCombobox",
        fieldbackground=[("readonly", p.surface)],
        selectbackground=[("readonly", p.surface)],
        selectforeground=[("readonly", p.text)],
    )
    style.configure("TSpinbox", arrowsize=theme.px(12), background=p.surface_alt)
    style.configure(
        "TRadiobutton",
        background=p.surface,
        foreground=p.text,
        font=f.body,
        indicatorcolor=p.surface,
        indicatorrelief="flat",
        indicatorsize=theme.px(15),
        indicatormargin=(0, 0, 6, 0),
    )
    style.map(
        "TRadiobutton",
        indicatorcolor=[("selected", p.primary), ("pressed", p.hover)],
        background=[("active", p.surface)],
    )
