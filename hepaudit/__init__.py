"""hepaudit: audit ONNX jet taggers on ROOT data."""

__version__ = "0.1.0"
