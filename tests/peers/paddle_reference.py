"""Run in a subprocess by the tests: a paddle.vision ResNet-50 saved with paddle.save, and seed 000's
static-graph ResNet-50 (Caffe-style parameter names) saved with paddle.static.save; both with their outputs.

Usage: python paddle_reference.py OUT_DIR
"""

import os
import sys
from pathlib import Path

os.environ["FLAGS_enable_pir_api"] = "0"  # noqa: SIM112 - Paddle reads this exact name; seed 000's static API (ParamAttr names, moving_mean_name)

import numpy as np  # noqa: E402
import paddle  # noqa: E402

out = Path(sys.argv[1])
rng = np.random.default_rng(0)
x = rng.random((2, 3, 96, 96), dtype=np.float32)
np.save(out / "input.npy", x)

# 1. Dygraph paddle.vision.models.resnet50 with random BN statistics.
paddle.seed(0)
model = paddle.vision.models.resnet50()
state = model.state_dict()
for key, value in state.items():
    if key.endswith("_mean"):
        value.set_value(rng.normal(0, 0.1, value.shape).astype("float32"))
    elif key.endswith("_variance"):
        value.set_value(rng.uniform(0.5, 1.5, value.shape).astype("float32"))
model.eval()
paddle.save(model.state_dict(), str(out / "paddle_resnet50.pdparams"))
np.save(out / "paddle_resnet50.logits.npy", model(paddle.to_tensor(x)).numpy())

# 2. Seed 000's program: Caffe names, stride on branch2b (the 3x3).
paddle.enable_static()
ParamAttr = paddle.ParamAttr


def conv_bn(inp, filters, size, stride=1, act=None, name=None):
    conv = paddle.static.nn.conv2d(
        inp,
        filters,
        size,
        stride=stride,
        padding=(size - 1) // 2,
        param_attr=ParamAttr(name=name + "_weights"),
        bias_attr=False,
    )
    bn = "bn_" + name if name == "conv1" else "bn" + name[3:]
    return paddle.static.nn.batch_norm(
        conv,
        act=act,
        is_test=True,
        param_attr=ParamAttr(name=bn + "_scale"),
        bias_attr=ParamAttr(bn + "_offset"),
        moving_mean_name=bn + "_mean",
        moving_variance_name=bn + "_variance",
    )


def bottleneck(inp, filters, stride, name):
    a = conv_bn(inp, filters, 1, act="relu", name=name + "_branch2a")
    b = conv_bn(a, filters, 3, stride=stride, act="relu", name=name + "_branch2b")
    c = conv_bn(b, filters * 4, 1, name=name + "_branch2c")
    short = (
        conv_bn(inp, filters * 4, 1, stride, name=name + "_branch1")
        if inp.shape[1] != filters * 4 or stride != 1
        else inp
    )
    return paddle.nn.functional.relu(paddle.add(short, c))


main, startup = paddle.static.Program(), paddle.static.Program()
with paddle.static.program_guard(main, startup):
    image = paddle.static.data("image", [None, 3, 96, 96], "float32")
    net = conv_bn(image, 64, 7, stride=2, act="relu", name="conv1")
    net = paddle.nn.functional.max_pool2d(net, 3, 2, 1)
    for stage, (blocks, filters) in enumerate(zip([3, 4, 6, 3], [64, 128, 256, 512], strict=True)):
        for i in range(blocks):
            net = bottleneck(net, filters, 2 if i == 0 and stage != 0 else 1, f"res{stage + 2}{chr(97 + i)}")
    net = paddle.flatten(paddle.nn.functional.adaptive_avg_pool2d(net, 1), 1)
    logits = paddle.static.nn.fc(
        net, 1000, weight_attr=ParamAttr(name="fc_0.w_0"), bias_attr=ParamAttr(name="fc_0.b_0")
    )
exe = paddle.static.Executor(paddle.CPUPlace())
exe.run(startup)
scope = paddle.static.global_scope()
for var in main.list_vars():
    if var.name.endswith(("_mean", "_variance")) and var.persistable:
        low, high = (0.5, 1.5) if var.name.endswith("_variance") else (-0.1, 0.1)
        scope.find_var(var.name).get_tensor().set(
            rng.uniform(low, high, var.shape).astype("float32"), paddle.CPUPlace()
        )
(result,) = exe.run(main, feed={"image": x}, fetch_list=[logits])
paddle.static.save(main, str(out / "caffe_resnet50"))
np.save(out / "caffe_resnet50.logits.npy", result)
print("ok")
