"""Offline wiring: file in -> perception -> conditioning -> generator -> file out."""
