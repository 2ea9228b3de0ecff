"""Moving pictures: videos and animations read, upscaled frame by frame, and written (PyAV, Pillow)."""
