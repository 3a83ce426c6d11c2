"""trd-edge: edge package."""
