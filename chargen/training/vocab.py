"""The vocabulary a fine-tuned run starts with: the checkpoint's, grown only when asked."""

from __future__ import annotations

from ..checkpoint import Checkpoint
from ..errors import ChargenError, describe_chars
from ..text.files import find_text_files, iter_text
from ..text.tokenizers import CharTokenizer, Tokenizer
from .config import TrainConfig


def initial_tokenizer(init: Checkpoint | None, corpus_paths: list[str], config: TrainConfig) -> Tokenizer | None:
    """The tokenizer to encode the corpus with: None to train one on it (a new run), else
    ``--init-from``'s. A char vocabulary that lacks some of the corpus's characters is refused,
    or with ``--extend-vocab`` grown to take them (new ids last, see ``grow_vocab``)."""
    if init is None:
        return None
    tokenizer = init.tokenizer
    if isinstance(tokenizer, CharTokenizer):
        corpus_chars = CharTokenizer.train(iter_text(find_text_files(corpus_paths), config.encoding),
                                           tokenizer.normalize).chars
        missing = set(corpus_chars) - set(tokenizer.chars)
        if missing and not config.extend_vocab:
            raise ChargenError(f"the corpus has characters {config.init_from} never saw: "
                               f"{describe_chars(missing)}; pass --extend-vocab to add them")
        if missing:
            tokenizer = tokenizer.extended(missing)
    return tokenizer
