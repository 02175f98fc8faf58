"""The Python API's adaptation: ``adapt=True``, ``learn`` and ``restore_weights``."""

import chargen
from tests.ui.test_chat import make_random_checkpoint


def test_adapt_true_learns_from_each_call_and_restore_weights_undoes_it(tmp_path):
    path = make_random_checkpoint(tmp_path / "rand.safetensors")
    on_disk = path.read_bytes()
    model = chargen.load(path)
    original = model.generate("hello", length=40, temp=0)
    assert model.generate("hello", length=40, temp=0, adapt=True) == original  # adapts after generating
    assert model.adapted
    "".join(model.stream("hello hello hello", length=40, temp=0, adapt=True))
    for _ in range(5):
        model.learn("the cat sat on the mat. " * 4)
    assert model.generate("hello", length=40, temp=0) != original
    model.restore_weights()
    assert not model.adapted and model.generate("hello", length=40, temp=0) == original
    assert path.read_bytes() == on_disk
