"""vislab: train, evaluate, explain and serve image classifiers and segmentation models with PyTorch
Lightning. The Python API (`vislab.api`) loads on first use, so that `import vislab` and the `vislab`
command start without importing torch."""

import importlib

__version__ = "0.1.0"

# name -> the module that defines it
PUBLIC = {
    "train": "vislab.api",
    "Run": "vislab.api",
    "load": "vislab.api",
    "compare": "vislab.api",
    "sweep": "vislab.sweeps",
    "Sweep": "vislab.sweeps",
    "Model": "vislab.api",
    "Predictions": "vislab.api",
    "Metrics": "vislab.api",
    "register_model": "vislab.models",
    "VislabError": "vislab.errors",
}
__all__ = list(PUBLIC)


def __getattr__(name: str):
    if name not in PUBLIC:
        raise AttributeError(f"module 'vislab' has no attribute {name!r}")
    value = getattr(importlib.import_module(PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(PUBLIC))
