"""trd-edge: calibration package."""
