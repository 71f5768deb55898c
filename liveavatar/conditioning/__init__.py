"""Conditioning: perception cues + control events -> one Conditioning per output tick.

Retargeting (retarget.py), the emotion engine (emotion.py), gestures (gestures.py), triggered
actions (actions.py), idle behaviour (idle.py) and the mapping file (mapping.py,
default_mapping.toml), tied together at a fixed rate by the Conditioner (conditioner.py).
"""
from liveavatar.conditioning.conditioner import Conditioner
from liveavatar.conditioning.jsonio import conditioning_to_json
from liveavatar.conditioning.mapping import DEFAULT_MAPPING_PATH, GESTURES, Mapping, load_mapping
from liveavatar.conditioning.offline import conditioning_over

__all__ = ["Conditioner", "Mapping", "load_mapping", "conditioning_to_json", "conditioning_over",
           "DEFAULT_MAPPING_PATH", "GESTURES"]
