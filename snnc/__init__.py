"""snnc: compile trained PyTorch networks into bit-exact spiking neural network hardware."""

__version__ = "0.1.0"
