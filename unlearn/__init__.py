"""The forgetting toolkit: SemEval data, model loading, parameter selection, losses, the trainer.

The unlearning entry points are imported lazily (they pull in ``transformers.Trainer``)::

    from unlearn import UnlearnConfig, run_unlearning, unlearn_model
"""

_LAZY = {
    "UnlearnConfig": "unlearn.config",
    "UnlearnTrainer": "unlearn.trainer",
    "run_unlearning": "unlearn.api",
    "train_unlearning": "unlearn.api",
    "unlearn_model": "unlearn.api",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'unlearn' has no attribute {name!r}")


__all__ = sorted(_LAZY)
