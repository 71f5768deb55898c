"""Interoperation with the VTuber ecosystem: VMC protocol out/in (vmc), a VTube Studio-
compatible WebSocket API (vts), and their wiring into the service (service)."""
