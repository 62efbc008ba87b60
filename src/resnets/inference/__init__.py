"""Running a model as fast as this machine allows: BN folded, inductor, ONNX Runtime, OpenVINO, bf16 and int8.

Below training and deployment alike: distillation serves its teachers through it, `resnets bench` times it, and
`deploy` exports and predicts with it.

Example:
    >>> fast = optimize_for_inference(model.eval(), "auto", calibration=images[:256])
"""

from resnets.inference.optimize import InferenceModel, Runtime, optimize_for_inference

__all__ = ["InferenceModel", "Runtime", "optimize_for_inference"]
