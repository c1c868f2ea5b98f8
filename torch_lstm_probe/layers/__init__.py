"""Runtime modules that reproduce Keras layers (importing this registers them)."""

from .core import Activation, Dense, Dropout, Embedding, TimeDistributed
from .recurrent import LSTM, LSTMGates, lstm_reference

__all__ = ["Activation", "Dense", "Dropout", "Embedding", "TimeDistributed", "LSTM", "LSTMGates", "lstm_reference"]
