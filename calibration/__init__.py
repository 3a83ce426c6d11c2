"""trd-edge calibration (torch-free): a station's score statistics, threshold and geometry.

- `calibration.threshold` — threshold for a target false-alarm rate with an exact
  order-statistic reliability statement, or for best F1 on a labelled set;
- `calibration.fit` — refit per-modality statistics on station maps, score frames with them;
- `calibration.geometry` — the station geometry record and the comparison with training data;
- `calibration.report` — histogram PNG and text report;
- `calibration.cli` — ``trd-edge calibrate`` (`add_calibrate_args`, `run_calibrate`).
"""
