"""`make demo`: the model side of the library on the default network, end to end in seconds.

Example:
    $ python -m resnets.demo
"""

from __future__ import annotations

import torch

from resnets.bench.summary import summarize
from resnets.models import create_model, get_config, list_models


def main() -> None:
    print(f"{len(list_models())} registered networks, e.g. {', '.join(list_models('resnet*v2'))}\n")
    print(get_config("resnet20").describe(), "\n")
    print(summarize("resnet20", table_depth=1).text, "\n")
    model = create_model("resnet20").eval()
    with torch.no_grad():
        probabilities = model(torch.randn(4, 3, 32, 32)).softmax(dim=1)
    print(f"forward pass: input (4, 3, 32, 32) -> class probabilities {tuple(probabilities.shape)}")


if __name__ == "__main__":
    main()
