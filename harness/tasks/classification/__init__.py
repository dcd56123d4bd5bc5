"""Image classification: the task (``task``), its dataset loaders (``data``) and
the project models with the timm fallback (``models``)."""

from .task import ClassificationConfig, ClassificationTask

__all__ = ["ClassificationTask", "ClassificationConfig"]
