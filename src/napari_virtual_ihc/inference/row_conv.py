"""A wide convolution to a few output channels (a generator's RGB layer) as one row convolution plus sums.

Why: oneDNN computes output channels in blocks of 16, so the 7x7 convolution from 64 channels to 3 that ends
every ResNet generator costs as much as one to 16 channels: on an AMD EPYC Zen 4 core, bf16, a 1131 px map,
0.60 s for 3 channels and 0.64 s for 16, five times the time per useful multiplication of the trunk's
convolutions, 6-7 % of a tile. Written as one 1 x k convolution to k * K channels (row ``dy`` of each filter
is its own output channel) followed by k shifted sums of K-channel planes, the same products take 0.36 s,
and the k rows are summed in fp32 (the direct bf16 convolution rounds its output to bf16 once; here each
row's partial sum is rounded instead: the measured maximum error against fp32 was 0.016 instead of 0.024 on
outputs of magnitude 8). Only on the CPU and at inference; anywhere else the plain convolution runs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MAX_ROW_CHANNELS = 32  # k * K up to two of oneDNN's 16-channel blocks: 7 x 3 = 21 fits one and a third


class RowSplitConv2d(nn.Conv2d):
    """``nn.Conv2d`` (k x k, stride 1, unpadded, ungrouped) computed as a 1 x k convolution plus row sums."""

    def __init__(self, conv: nn.Conv2d) -> None:
        if not is_row_split_eligible(conv):
            raise ValueError(f"not an unpadded k x k stride-1 convolution to few channels: {conv}")
        k = conv.kernel_size[0]
        super().__init__(conv.in_channels, conv.out_channels, k, bias=conv.bias is not None, padding=0)
        with torch.no_grad():
            self.weight.copy_(conv.weight)
            if conv.bias is not None and self.bias is not None:
                self.bias.copy_(conv.bias)
        self.to(conv.weight.device)
        # (k * K, C, 1, k): output channel dy * K + c is row dy of filter c
        rows = conv.weight.detach().permute(2, 0, 1, 3).reshape(k * conv.out_channels, conv.in_channels, 1, k)
        self.register_buffer("row_weight", rows.clone().contiguous(memory_format=torch.channels_last))

    row_weight: Tensor

    def forward(self, x: Tensor) -> Tensor:
        if x.device.type != "cpu" or (torch.is_grad_enabled() and x.requires_grad):
            return super().forward(x)
        k, c = self.kernel_size[0], self.out_channels
        ho = x.shape[2] - k + 1
        if ho < 1 or x.shape[3] < k:
            return super().forward(x)
        z = F.conv2d(x, self.row_weight)  # (N, k * K, H, W - k + 1), in autocast's dtype where on
        y = z[:, 0:c, 0:ho].float()
        for dy in range(1, k):
            y += z[:, dy * c : (dy + 1) * c, dy : dy + ho]
        if self.bias is not None:
            y += self.bias.float().view(1, c, 1, 1)
        return y

    def extra_repr(self) -> str:
        return super().extra_repr() + ", as rows"


def is_row_split_eligible(conv: nn.Module) -> bool:
    """A plain k x k (k >= 5), stride-1, undilated, ungrouped, unpadded convolution with k * K <= 32."""
    if type(conv) is not nn.Conv2d or hasattr(conv, "parametrizations"):
        return False
    k = conv.kernel_size
    return (
        k[0] == k[1]
        and k[0] >= 5
        and conv.stride == (1, 1)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.padding == (0, 0)
        and k[0] * conv.out_channels <= MAX_ROW_CHANNELS
    )


def use_row_split(module: nn.Module) -> int:
    """Replace (in place) every eligible convolution of ``module`` by a :class:`RowSplitConv2d`; returns how
    many. Call on an inference copy for the CPU (after folding the norms into the weights)."""
    count = 0
    for name, sub in list(module.named_modules()):
        if not name or not is_row_split_eligible(sub):
            continue
        assert isinstance(sub, nn.Conv2d)
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, child, RowSplitConv2d(sub))
        count += 1
    return count
