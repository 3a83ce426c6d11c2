"""Sub-commands of `trd-edge` with more than a few lines: run, bench, doctor."""
