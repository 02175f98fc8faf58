"""chargen: train character-level LSTM language models on any text, then sample or chat.

    import chargen
    model = chargen.load("checkpoints/my-run")
    print(model.generate("ROMEO:", length=200, temp=0.8))
"""

__version__ = "0.1.0"

from .api import TrainedModel, load, train  # noqa: E402

__all__ = ["load", "train", "TrainedModel", "__version__"]
