"""Runtime modules that reproduce Keras layers (importing this registers them)."""

from . import ops  # noqa: F401  (Keras 3 op nodes)
from .activation_layers import ELU, LeakyReLU, PReLU, ReLU, Softmax
from .attention import AdditiveAttention, Attention, GroupQueryAttention, MultiHeadAttention
from .bidirectional import Bidirectional, BidirectionalGates
from .cell_rnn import CellRNN
from .conv import (
    AveragePooling1D,
    AveragePooling2D,
    AveragePooling3D,
    Conv1D,
    Conv2D,
    Conv3D,
    GlobalAveragePooling1D,
    GlobalAveragePooling2D,
    GlobalAveragePooling3D,
    GlobalMaxPooling1D,
    GlobalMaxPooling2D,
    GlobalMaxPooling3D,
    MaxPooling1D,
    MaxPooling2D,
    MaxPooling3D,
)
from .conv_lstm import ConvLSTM, ConvLSTMGates
from .core import Activation, Dense, Dropout, Embedding, Masking, TimeDistributed
from .gru import GRU, GRUGates, gru_reference
from .lstm import LSTM, LSTMGates, lstm_reference
from .merge import Concatenate, Dot, Merge
from .normalization import BatchNormalization, LayerNormalization
from .preprocessing import ActivityRegularization, CategoryEncoding, IntegerLookup, Normalization, Rescaling
from .reshape import (
    Cropping1D,
    Cropping2D,
    Cropping3D,
    Flatten,
    Permute,
    RepeatVector,
    Reshape,
    UpSampling1D,
    UpSampling2D,
    UpSampling3D,
    ZeroPadding1D,
    ZeroPadding2D,
    ZeroPadding3D,
)
from .simple_rnn import SimpleRNN, SimpleRNNGates, simple_rnn_reference
from .stacked import StackedGates, StackedRecurrent
from .text import StringLookup, TextVectorization

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
    "ConvLSTM",
    "ConvLSTMGates",
    "StackedGates",
    "Bidirectional",
    "BidirectionalGates",
    "Conv1D",
    "MaxPooling1D",
    "AveragePooling1D",
    "GlobalMaxPooling1D",
    "GlobalAveragePooling1D",
    "Conv2D",
    "Conv3D",
    "MaxPooling2D",
    "MaxPooling3D",
    "AveragePooling2D",
    "AveragePooling3D",
    "GlobalMaxPooling2D",
    "GlobalAveragePooling2D",
    "GlobalMaxPooling3D",
    "GlobalAveragePooling3D",
    "ZeroPadding2D",
    "ZeroPadding3D",
    "Cropping2D",
    "Cropping3D",
    "UpSampling2D",
    "UpSampling3D",
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
    "ActivityRegularization",
    "CategoryEncoding",
    "IntegerLookup",
    "Normalization",
    "Rescaling",
    "StringLookup",
    "TextVectorization",
]
