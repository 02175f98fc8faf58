"""What to do with characters a model never saw: refuse the text, drop them, or replace them.

One pure function, used by ``chargen sample --prime``, the REPL and the API alike.
"""

from __future__ import annotations

import unicodedata

from ..errors import ChargenError, check_known_chars

UNKNOWN_POLICIES = ("error", "skip", "replace")
UNKNOWN_HELP = ("what to do with characters the model never saw: error (stop with an error), skip (drop "
                "them) or replace (the closest known character by NFKC folding, accents dropped, else nothing)")


def check_policy(policy: str, option: str = "--unknown") -> str:
    if policy not in UNKNOWN_POLICIES:
        raise ChargenError(f"{option} {policy!r}: choose {', '.join(UNKNOWN_POLICIES)}")
    return policy


def closest_known(char: str, tokenizer) -> str:
    """``char`` as known characters: its NFKC form ('ﬁ' -> 'fi', full-width 'Ａ' -> 'A'), else its
    letters without accents ('é' -> 'e'), else nothing."""
    for form in (unicodedata.normalize("NFKC", char),
                 "".join(c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c))):
        if form and not tokenizer.unknown_chars(form):
            return form
    return ""


def clean_text(text: str, tokenizer, policy: str = "error", what: str = "the text") -> tuple[str, set[str]]:
    """``text`` made of characters the ``tokenizer`` knows, and the unknown characters it had.

    ``error`` raises ChargenError naming them (``what`` names the text); ``skip`` drops them;
    ``replace`` maps each to ``closest_known``.
    """
    check_policy(policy)
    unknown = tokenizer.unknown_chars(text)
    if not unknown:
        return text, set()
    if policy == "error":
        check_known_chars(tokenizer, text, what, "; use --unknown skip or replace to drop or map them")
    mapping = {c: (closest_known(c, tokenizer) if policy == "replace" else "") for c in unknown}
    return "".join(mapping.get(c, c) for c in text), unknown
