"""Faces in frames: detection, landmarks, tracking, crops and paste-back, expression."""
