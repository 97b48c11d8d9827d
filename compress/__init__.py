"""compress: a model compression pipeline for deployment.

`import compress` stays light on purpose: onnx, onnxruntime, torch_pruning and
optuna are imported inside the stages that need them (a test enforces this).
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
