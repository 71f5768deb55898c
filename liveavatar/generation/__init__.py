"""Generation stage: Conditioning -> RGBA avatar frames (generators: rig2d, neural, plug-ins)."""
