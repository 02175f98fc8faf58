"""Text in: finding and reading files, tokenizers, the encoded and cached corpus, TBPTT batches."""
