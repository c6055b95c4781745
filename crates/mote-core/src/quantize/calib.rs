//! Calibration: activation ranges observed on sample inputs.
