"""Object detection: the task (``task``), KITTI/COCO data on disk and their
generators (``data``), the KITTI devkit AP (``kitti_eval``) and the mmdetection
side (``mmdet_support``; mmcv/mmengine/mmdet are imported only inside its functions)."""

from .task import DETECTION_DATASETS, DetectionConfig, DetectionData, DetectionTask

__all__ = ["DetectionTask", "DetectionConfig", "DetectionData", "DETECTION_DATASETS"]
