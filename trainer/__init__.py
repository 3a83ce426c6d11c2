"""trd-edge: trainer package."""
