"""What the model sees and what its maps mean: registration, preprocessing, pose, scoring (numpy/OpenCV)."""
