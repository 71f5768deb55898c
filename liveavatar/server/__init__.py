"""The live service (`liveavatar serve`): aiohttp app, aiortc WebRTC (studio, viewer, WHIP,
WHEP), control API with OpenAPI and a WebSocket event stream, health, Prometheus metrics.
engine.py wires the stages per session and runs the one render thread; app.py is HTTP."""
