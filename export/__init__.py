"""trd-edge: export package."""
