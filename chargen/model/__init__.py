"""The network: ``CharLM`` (embedding, stacked recurrent layers, head) and its fast sampling engine."""

from .lm import BEFORE_OPTION, CELLS, REGULARIZATION, CharLM, ModelConfig, TopOutput, grow_vocab
from .state import State, detach_state, map_state

__all__ = ["BEFORE_OPTION", "CELLS", "REGULARIZATION", "CharLM", "ModelConfig", "State", "TopOutput", "detach_state", "grow_vocab", "map_state"]
