"""RAFT optical flow (Teed & Deng 2020), full model, in the layout of ``raft-things.pth``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

HIDDEN = CONTEXT = 128
LEVELS, RADIUS = 4, 4
# The coarsest correlation level must be at least 2 px wide for the lookup's normalisation.
MIN_SIDE = 8 * 2**LEVELS


def _norm(kind: str, channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels) if kind == "batch" else nn.InstanceNorm2d(channels)


class ResidualBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, norm: str, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, padding=1, stride=stride)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1)
        self.norm1, self.norm2 = _norm(norm, planes), _norm(norm, planes)
        self.downsample: nn.Module | None = None
        if stride != 1:
            self.norm3 = _norm(norm, planes)
            self.downsample = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride), self.norm3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.norm1(self.conv1(x)))
        y = F.relu(self.norm2(self.conv2(y)))
        return F.relu((self.downsample(x) if self.downsample is not None else x) + y)


class BasicEncoder(nn.Module):
    """1/8-resolution feature (instance norm) or context (batch norm) encoder."""

    def __init__(self, output_dim: int, norm: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3)
        self.norm1 = _norm(norm, 64)
        self.layer1 = nn.Sequential(ResidualBlock(64, 64, norm, 1), ResidualBlock(64, 64, norm, 1))
        self.layer2 = nn.Sequential(ResidualBlock(64, 96, norm, 2), ResidualBlock(96, 96, norm, 1))
        self.layer3 = nn.Sequential(ResidualBlock(96, 128, norm, 2), ResidualBlock(128, 128, norm, 1))
        self.conv2 = nn.Conv2d(128, output_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.norm1(self.conv1(x)))
        return self.conv2(self.layer3(self.layer2(self.layer1(x))))


class MotionEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.convc1 = nn.Conv2d(LEVELS * (2 * RADIUS + 1) ** 2, 256, 1)
        self.convc2 = nn.Conv2d(256, 192, 3, padding=1)
        self.convf1 = nn.Conv2d(2, 128, 7, padding=3)
        self.convf2 = nn.Conv2d(128, 64, 3, padding=1)
        self.conv = nn.Conv2d(64 + 192, 128 - 2, 3, padding=1)

    def forward(self, flow: torch.Tensor, corr: torch.Tensor) -> torch.Tensor:
        cor = F.relu(self.convc2(F.relu(self.convc1(corr))))
        flo = F.relu(self.convf2(F.relu(self.convf1(flow))))
        return torch.cat([F.relu(self.conv(torch.cat([cor, flo], dim=1))), flow], dim=1)


class SepConvGRU(nn.Module):
    def __init__(self, hidden: int, inputs: int) -> None:
        super().__init__()
        for axis, (kernel, pad) in {"1": ((1, 5), (0, 2)), "2": ((5, 1), (2, 0))}.items():
            for gate in "zrq":
                setattr(self, f"conv{gate}{axis}", nn.Conv2d(hidden + inputs, hidden, kernel, padding=pad))

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        for axis in "12":
            hx = torch.cat([h, x], dim=1)
            z = torch.sigmoid(getattr(self, f"convz{axis}")(hx))
            r = torch.sigmoid(getattr(self, f"convr{axis}")(hx))
            q = torch.tanh(getattr(self, f"convq{axis}")(torch.cat([r * h, x], dim=1)))
            h = (1 - z) * h + z * q
        return h


class FlowHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(HIDDEN, 256, 3, padding=1)
        self.conv2 = nn.Conv2d(256, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.relu(self.conv1(x)))


class UpdateBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = MotionEncoder()
        self.gru = SepConvGRU(HIDDEN, CONTEXT + HIDDEN)
        self.flow_head = FlowHead()
        self.mask = nn.Sequential(nn.Conv2d(HIDDEN, 256, 3, padding=1), nn.ReLU(), nn.Conv2d(256, 64 * 9, 1))

    def forward(
        self, net: torch.Tensor, inp: torch.Tensor, corr: torch.Tensor, flow: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """New hidden state, upsampling mask and flow update."""
        net = self.gru(net, torch.cat([inp, self.encoder(flow, corr)], dim=1))
        return net, 0.25 * self.mask(net), self.flow_head(net)


def _sample(volume: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Bilinear lookup of ``volume`` (N, 1, H, W) at pixel coordinates (N, h, w, 2) in (x, y)."""
    height, width = volume.shape[-2:]
    x, y = coords.split(1, dim=-1)
    grid = torch.cat([2 * x / (width - 1) - 1, 2 * y / (height - 1) - 1], dim=-1)
    return F.grid_sample(volume, grid, align_corners=True)


class CorrPyramid:
    """All-pairs correlation, average-pooled into ``LEVELS`` levels, looked up in a radius."""

    def __init__(self, fmap1: torch.Tensor, fmap2: torch.Tensor) -> None:
        b, dim, h, w = fmap1.shape
        corr = fmap1.view(b, dim, h * w).transpose(1, 2) @ fmap2.view(b, dim, h * w)
        corr = (corr / dim**0.5).reshape(b * h * w, 1, h, w)
        self.levels = [corr]
        for _ in range(LEVELS - 1):
            corr = F.avg_pool2d(corr, 2, stride=2)
            self.levels.append(corr)
        offsets = torch.linspace(-RADIUS, RADIUS, 2 * RADIUS + 1)
        # RAFT's window: the first offset axis moves x, the second y (meshgrid of (dy, dx)).
        self.delta = torch.stack(torch.meshgrid(offsets, offsets, indexing="ij"), dim=-1).view(
            1, 2 * RADIUS + 1, 2 * RADIUS + 1, 2
        )

    def __call__(self, coords: torch.Tensor) -> torch.Tensor:
        b, _, h, w = coords.shape
        centre = coords.permute(0, 2, 3, 1).reshape(b * h * w, 1, 1, 2)
        out = [_sample(level, centre / 2**i + self.delta).view(b, h, w, -1) for i, level in enumerate(self.levels)]
        return torch.cat(out, dim=-1).permute(0, 3, 1, 2).float()


def _pixel_grid(b: int, h: int, w: int) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return torch.stack([xs, ys]).float()[None].repeat(b, 1, 1, 1)


def _upsample(flow: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Convex 8x upsampling of a 1/8 flow with the learned 3x3 combination weights."""
    b, _, h, w = flow.shape
    mask = torch.softmax(mask.view(b, 1, 9, 8, 8, h, w), dim=2)
    neighbours = F.unfold(8 * flow, [3, 3], padding=1).view(b, 2, 9, 1, 1, h, w)
    up = torch.sum(mask * neighbours, dim=2).permute(0, 1, 4, 2, 5, 3)
    return up.reshape(b, 2, 8 * h, 8 * w)


class RAFT(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fnet = BasicEncoder(256, "instance")
        self.cnet = BasicEncoder(HIDDEN + CONTEXT, "batch")
        self.update_block = UpdateBlock()

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> RAFT:
        model = cls()
        model.load_state_dict({k.removeprefix("module."): v for k, v in state.items()})
        return model.eval()

    def forward(self, image1: torch.Tensor, image2: torch.Tensor, iters: int = 20) -> torch.Tensor:
        """Full-resolution flow from 0..255 RGB images whose sides are multiples of 8."""
        image1, image2 = 2 * (image1 / 255.0) - 1, 2 * (image2 / 255.0) - 1
        fmaps = self.fnet(torch.cat([image1, image2], dim=0))
        corr = CorrPyramid(*fmaps.float().chunk(2, dim=0))
        net, inp = self.cnet(image1).split([HIDDEN, CONTEXT], dim=1)
        net, inp = torch.tanh(net), F.relu(inp)
        b, _, h, w = image1.shape
        coords0 = _pixel_grid(b, h // 8, w // 8)
        coords1 = coords0.clone()
        for _ in range(iters):
            net, mask, delta = self.update_block(net, inp, corr(coords1), coords1 - coords0)
            coords1 = coords1 + delta
        return _upsample(coords1 - coords0, mask)


def pad_to_multiple_of_8(*images: torch.Tensor) -> list[torch.Tensor]:
    """RAFT's ``InputPadder`` ('sintel' mode): replicate-pad, split evenly on both sides."""
    h, w = images[0].shape[-2:]
    pad_h, pad_w = (-h) % 8, (-w) % 8
    pad = [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2]
    return [F.pad(x, pad, mode="replicate") for x in images]
