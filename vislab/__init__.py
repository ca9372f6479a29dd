"""vislab: train, evaluate, explain and serve image classifiers with PyTorch Lightning."""

__version__ = "0.1.0"
