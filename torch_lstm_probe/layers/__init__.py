"""Runtime modules that reproduce Keras layers (importing this registers them)."""

from . import ops  # noqa: F401  (Keras 3 op nodes)
from .activation_layers import ELU, LeakyReLU, PReLU, ReLU, Softmax
from .attention import AdditiveAttention, Attention, GroupQueryAttention, MultiHeadAttention
from .bidirectional import Bidirectional, BidirectionalGates
from .cell_rnn import CellRNN
from .conv import AveragePooling1D, Conv1D, GlobalAveragePooling1D, GlobalMaxPooling1D, MaxPooling1D
from .core import Activation, Dense, Dropout, Embedding, Masking, TimeDistributed
from .gru import GRU, GRUGates, gru_reference
from .lstm import LSTM, LSTMGates, lstm_reference
from .merge import Concatenate, Dot, Merge
from .normalization import BatchNormalization, LayerNormalization
from .reshape import Cropping1D, Flatten, Permute, RepeatVector, Reshape, UpSampling1D, ZeroPadding1D
from .simple_rnn import SimpleRNN, SimpleRNNGates, simple_rnn_reference
from .stacked import StackedGates, StackedRecurrent

__all__ = [
    "Activation",
    "Dense",
    "Dropout",
    "Embedding",
    "Masking",
    "TimeDistributed",
    "LSTM",
    "LSTMGates",
    "lstm_reference",
    "GRU",
    "GRUGates",
    "gru_reference",
    "SimpleRNN",
    "SimpleRNNGates",
    "simple_rnn_reference",
    "StackedRecurrent",
    "CellRNN",
    "StackedGates",
    "Bidirectional",
    "BidirectionalGates",
    "Conv1D",
    "MaxPooling1D",
    "AveragePooling1D",
    "GlobalMaxPooling1D",
    "GlobalAveragePooling1D",
    "Flatten",
    "Reshape",
    "Permute",
    "RepeatVector",
    "ZeroPadding1D",
    "Cropping1D",
    "UpSampling1D",
    "Merge",
    "Concatenate",
    "Dot",
    "BatchNormalization",
    "LayerNormalization",
    "Softmax",
    "ReLU",
    "LeakyReLU",
    "PReLU",
    "ELU",
    "Attention",
    "AdditiveAttention",
    "MultiHeadAttention",
    "GroupQueryAttention",
]
