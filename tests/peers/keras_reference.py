"""Run in a subprocess by the tests (TensorFlow and torch do not share a process well):
build keras.applications ResNets with random weights, save them as .h5 and .keras, and save their logits.

Usage: python keras_reference.py OUT_DIR
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

out = Path(sys.argv[1])
rng = np.random.default_rng(0)
x = rng.random((2, 96, 96, 3), dtype=np.float32)
np.save(out / "input.npy", x)
for name in ("ResNet50", "ResNet50V2"):
    model = getattr(keras.applications, name)(weights=None, classifier_activation=None, input_shape=(96, 96, 3))
    for layer in model.layers:  # non-trivial BN statistics and biases, so that a mis-mapped tensor shows
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            shape = gamma.shape
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, shape).astype("float32"),
                    rng.normal(0, 0.1, shape).astype("float32"),
                    rng.normal(0, 0.1, shape).astype("float32"),
                    rng.uniform(0.5, 1.5, shape).astype("float32"),
                ]
            )
        elif isinstance(layer, keras.layers.Conv2D) and layer.use_bias:
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, rng.normal(0, 0.1, bias.shape).astype("float32")])
    model.save(out / f"{name}.h5")
    model.save(out / f"{name}.keras")
    np.save(out / f"{name}.logits.npy", model.predict(x, verbose=0))
    # what Keras users feed it: an RGB image in 0..255 through the net's own preprocess_input (v1: caffe, BGR less the
    # ImageNet mean; V2: scaled to -1..1)
    family = keras.applications.resnet_v2 if name.endswith("V2") else keras.applications.resnet
    np.save(out / f"{name}.preprocessed_logits.npy", model.predict(family.preprocess_input(x * 255.0), verbose=0))
print("ok")
