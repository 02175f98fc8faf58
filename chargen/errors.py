"""The one exception type that means "the user gave us something we cannot use"."""


class ChargenError(Exception):
    """A problem with the user's input (file, option, checkpoint), not a bug in chargen.

    The CLI prints the message as one line and exits with code 2; the message should name
    the file or option at fault and say what to do about it.
    """


def describe_chars(chars) -> str:
    """Readable list of characters for error messages: repr plus code point, capped at 10."""
    chars = sorted(set(chars))
    shown = ", ".join(f"{c!r} (U+{ord(c):04X})" for c in chars[:10])
    more = f" and {len(chars) - 10} more" if len(chars) > 10 else ""
    return shown + more


def check_known_chars(tokenizer, text: str, subject: str, advice: str = "") -> None:
    """Refuse ``text`` if it has characters outside the ``tokenizer``'s vocabulary.

    Every place that feeds user text to a model says it the same way: ``subject`` names what
    was given (an option, a file), ``advice`` (starting with "; ") says what to do.
    """
    unknown = tokenizer.unknown_chars(text)
    if unknown:
        raise ChargenError(f"{subject} has characters the model never saw: {describe_chars(unknown)}{advice}")
