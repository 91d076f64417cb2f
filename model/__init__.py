"""Partial-convolution U-Net, ConvLSTM and attention infill models, baselines, inference."""
