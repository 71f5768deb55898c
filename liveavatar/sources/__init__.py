"""Media sources: turn files (and later cameras) into CapturedFrame / AudioChunk streams."""
