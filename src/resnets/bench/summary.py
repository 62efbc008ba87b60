"""A Keras-style model summary: a layer table from torchinfo, totals counted as Keras counts them.

Example:
    >>> print(summarize("resnet50v2").text)  # ... Total params: 25,613,800
"""

from __future__ import annotations

import dataclasses

import torchinfo

from resnets.bench.profile import count_macs, count_parameters
from resnets.models import create_model, get_entry


@dataclasses.dataclass(frozen=True)
class Summary:
    """The table as text and the totals as numbers."""

    model: str
    input_size: tuple[int, int, int]
    total_params: int
    trainable_params: int
    non_trainable_params: int
    macs: int
    activation_bytes: int
    table: str

    @property
    def text(self) -> str:
        rule = "=" * max(len(line) for line in self.table.splitlines())
        return "\n".join(
            [
                f"Model: {self.model}  input: {'x'.join(map(str, self.input_size))}",
                self.table,
                f"Total params: {self.total_params:,}",
                f"Trainable params: {self.trainable_params:,}",
                f"Non-trainable params: {self.non_trainable_params:,}  (BN running statistics, counted as Keras does)",
                f"Multiply-adds: {self.macs / 1e9:.3f} G",
                f"Activation memory (one image, forward): {self.activation_bytes / 2**20:.2f} MiB",
                rule,
            ]
        )

    def to_dict(self) -> dict:
        fields = dataclasses.asdict(self)
        fields.pop("table")
        fields["input_size"] = list(self.input_size)
        return fields


def summarize(name: str, input_size: tuple[int, int, int] | None = None, table_depth: int = 2, **overrides) -> Summary:
    """Summary of a registered model at its natural input size (or `input_size`, C H W), nested `table_depth` deep."""
    model = create_model(name, **overrides).eval()
    channels = model.config.in_chans
    size = tuple(input_size or (channels, *get_entry(name).input_size[1:]))
    if size[0] != channels:
        raise ValueError(f"--input-size {' '.join(map(str, size))}: the net takes {channels} channels (in_chans)")
    try:
        stats = torchinfo.summary(
            model,
            input_size=(1, *size),
            depth=table_depth,
            verbose=0,
            col_names=("output_size", "num_params", "mult_adds"),
            row_settings=("var_names",),
        )
    except RuntimeError as error:  # torchinfo wraps the model's own error in "see above stack traces", shown nowhere
        raise ValueError(f"{name} at input size {size}: {error.__cause__ or error}") from None
    table = str(stats).split("Total params")[0].rstrip()
    trainable, non_trainable = count_parameters(model)
    activation_bytes = sum(layer.output_bytes for layer in stats.summary_list if layer.is_leaf_layer)
    return Summary(
        name,
        size,
        trainable + non_trainable,
        trainable,
        non_trainable,
        count_macs(model, size),
        activation_bytes,
        table,
    )
