"""chargen: train character-level LSTM language models on any text, then sample or chat.

    import chargen
    model = chargen.load("checkpoints/my-run")
    print(model.generate("ROMEO:", length=200, temp=0.8))
"""

from .version import __version__
from .api import TrainedModel, load, train  # noqa: E402
from .errors import ChargenError  # noqa: E402
from .generation.settings import SamplingSettings  # noqa: E402

__all__ = ["load", "train", "TrainedModel", "SamplingSettings", "ChargenError", "__version__"]
