"""Perception stage: camera frames and microphone audio -> Cues (see pipeline.py)."""
from liveavatar.perception.jsonify import cues_to_json
from liveavatar.perception.pipeline import Perception
from liveavatar.perception.trackers import (
    FaceObservation,
    FaceTracker,
    HandsObservation,
    HandTracker,
    PoseObservation,
    PoseTracker,
    TasksFaceTracker,
)
from liveavatar.perception.worker import PerceptionWorker

__all__ = ["Perception", "PerceptionWorker", "cues_to_json", "PoseTracker", "FaceTracker", "HandTracker",
           "PoseObservation", "FaceObservation", "HandsObservation", "TasksFaceTracker"]
