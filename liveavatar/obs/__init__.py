"""Put the avatar into OBS Studio over obs-websocket 5 (`liveavatar obs setup|remove|status`).

OBS builds with `browser_source` get a transparent browser source on the viewer page; builds
without it (Debian's) get an `ffmpeg_source` reading the service's MPEG-TS feed, keyed by a
chroma-key filter. The hotkey script for OBS itself is integrations/obs/liveavatar_obs.py.
"""
