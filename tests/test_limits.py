"""Bounds on what a user may ask for: seeds must fit in 64 bits."""

import pytest

from chargen.errors import ChargenError
from chargen.limits import check_seed


@pytest.mark.parametrize("seed", [None, 0, 1337, -(1 << 63), (1 << 64) - 1])
def test_seeds_that_torch_takes_pass(seed):
    check_seed(seed)


@pytest.mark.parametrize("seed", [1 << 64, -(1 << 63) - 1, 10**30, 1.5, "7"])
def test_other_seeds_are_refused_with_the_option_named(seed):
    with pytest.raises(ChargenError, match=f"^--seed {seed}: must be a whole number that fits in 64 bits$"):
        check_seed(seed)
    with pytest.raises(ChargenError, match=f"^/seed {seed}: "):
        check_seed(seed, "/seed")
