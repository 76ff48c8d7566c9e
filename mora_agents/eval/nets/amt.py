"""AMT-S frame interpolation (Li et al., CVPR 2023), in the layout of VBench's ``amt-s.pth``.

The checkpoint is ``{"state_dict": ..., ...}`` holding the parameters of AMT's ``networks.AMT-S.Model``
built with ``corr_radius=3, corr_lvls=4, num_flows=3`` (VBench's ``AMT-S.yaml``); module names
here follow that model so the state dict loads strictly. Inputs are RGB in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mora_agents.eval.nets.checkpoint import load_checkpoint

RADIUS, LEVELS, NUM_FLOWS = 3, 4, 3
CHANNELS = (20, 32, 44, 56)  # image pyramid widths at 1/2, 1/4, 1/8, 1/16
SKIP = 20  # channels refined by the side branch of each ResBlock
FEATURES = 84  # correlation features at 1/8
# The coarsest correlation level must be at least 2 px wide for the lookup's normalisation
# (below that the reference network outputs NaN).
MIN_SIDE = 8 * 2**LEVELS
DIVISOR = 16  # int(16 / scale) in VBench, whose official run keeps scale = 1 (see metrics/motion_smoothness)


def resize(x: torch.Tensor, factor: float) -> torch.Tensor:
    return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)


def warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward-warp ``image`` by a pixel flow (B, 2, H, W), border padding."""
    b, _, h, w = flow.shape
    xs = torch.linspace(-1.0, 1.0, w).view(1, 1, 1, w).expand(b, -1, h, -1)
    ys = torch.linspace(-1.0, 1.0, h).view(1, 1, h, 1).expand(b, -1, -1, w)
    base = torch.cat([xs, ys], 1).to(image)
    offset = torch.cat([flow[:, :1] / ((w - 1.0) / 2.0), flow[:, 1:2] / ((h - 1.0) / 2.0)], 1)
    grid = (base + offset).permute(0, 2, 3, 1)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)


def conv_prelu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.PReLU(cout))


class Bottleneck(nn.Module):
    """RAFT's small-encoder bottleneck block with instance norm."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        mid = cout // 4
        self.conv1 = nn.Conv2d(cin, mid, 1)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride, 1)
        self.conv3 = nn.Conv2d(mid, cout, 1)
        self.downsample: nn.Module | None = None
        if stride != 1:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride), nn.InstanceNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(F.instance_norm(self.conv1(x)))
        y = F.relu(F.instance_norm(self.conv2(y)))
        y = F.relu(F.instance_norm(self.conv3(y)))
        return F.relu((self.downsample(x) if self.downsample is not None else x) + y)


class FeatureEncoder(nn.Module):
    """1/8-resolution matching features of both frames (RAFT's small encoder)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 7, 2, 3)
        self.layer1 = nn.Sequential(Bottleneck(32, 32, 1), Bottleneck(32, 32, 1))
        self.layer2 = nn.Sequential(Bottleneck(32, 64, 2), Bottleneck(64, 64, 1))
        self.layer3 = nn.Sequential(Bottleneck(64, 96, 2), Bottleneck(96, 96, 1))
        self.conv2 = nn.Conv2d(96, FEATURES, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(F.instance_norm(self.conv1(x)))
        return self.conv2(self.layer3(self.layer2(self.layer1(x))))


class ImagePyramid(nn.Module):
    """Context features of one frame at 1/2, 1/4, 1/8 and 1/16."""

    def __init__(self) -> None:
        super().__init__()
        for level, (cin, cout) in enumerate(zip((3, *CHANNELS[:-1]), CHANNELS, strict=True), 1):
            self.add_module(f"pyramid{level}", nn.Sequential(conv_prelu(cin, cout, 2), conv_prelu(cout, cout)))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for level in range(1, len(CHANNELS) + 1):
            x = getattr(self, f"pyramid{level}")(x)
            features.append(x)
        return features


class ResBlock(nn.Module):
    """Residual block whose last ``side`` channels get an extra convolution after each layer."""

    def __init__(self, channels: int, side: int) -> None:
        super().__init__()
        self.side = side
        self.conv1 = conv_prelu(channels, channels)
        self.conv2 = conv_prelu(side, side)
        self.conv3 = conv_prelu(channels, channels)
        self.conv4 = conv_prelu(side, side)
        self.conv5 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.prelu = nn.PReLU(channels)

    def _side(self, x: torch.Tensor, conv: nn.Module) -> torch.Tensor:
        return torch.cat([x[:, : -self.side], conv(x[:, -self.side :])], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv3(self._side(self.conv1(x), self.conv2))
        out = self.conv5(self._side(out, self.conv4))
        return self.prelu(x + out)


class Decoder(nn.Module):
    """Conv, ResBlock, then a 2x transposed conv: flows (and more) at twice the input resolution."""

    def __init__(self, cin: int, mid: int, cout: int) -> None:
        super().__init__()
        self.convblock = nn.Sequential(
            conv_prelu(cin, mid), ResBlock(mid, SKIP), nn.ConvTranspose2d(mid, cout, 4, 2, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convblock(x)


def conv_lrelu_conv(cin: int, mid: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, mid, 3, padding=1), nn.LeakyReLU(0.1), nn.Conv2d(mid, cout, 3, padding=1))


class UpdateBlock(nn.Module):
    """Residual update of the intermediate feature and both flows from the correlation lookup.

    Works at 1/8 resolution: inputs at a finer level are resized down by ``scale`` and the
    updates resized back up.
    """

    def __init__(self, cdim: int, scale: int | None = None) -> None:
        super().__init__()
        self.scale = scale
        hidden = 76
        self.convc1 = nn.Conv2d(2 * LEVELS * (2 * RADIUS + 1) ** 2, 64, 1)
        self.convf1 = nn.Conv2d(4, 40, 7, padding=3)
        self.convf2 = nn.Conv2d(40, 20, 3, padding=1)
        self.conv = nn.Conv2d(64 + 20, 68, 3, padding=1)
        self.gru = conv_lrelu_conv(68 + 4 + cdim, hidden, hidden)
        self.feat_head = conv_lrelu_conv(hidden, hidden, cdim)
        self.flow_head = conv_lrelu_conv(hidden, hidden, 4)

    def forward(self, feat: torch.Tensor, flow: torch.Tensor, corr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.scale is not None:
            feat = resize(feat, 1 / self.scale)
        cor = F.leaky_relu(self.convc1(corr), 0.1)
        flo = F.leaky_relu(self.convf2(F.leaky_relu(self.convf1(flow), 0.1)), 0.1)
        motion = F.leaky_relu(self.conv(torch.cat([cor, flo], 1)), 0.1)
        out = self.gru(torch.cat([motion, flow, feat], 1))
        delta_feat, delta_flow = self.feat_head(out), self.flow_head(out)
        if self.scale is not None:
            delta_feat = resize(delta_feat, self.scale)
            delta_flow = self.scale * resize(delta_flow, self.scale)
        return delta_feat, delta_flow


def _lookup(pyramid: list[torch.Tensor], coords: torch.Tensor) -> torch.Tensor:
    """Bilinear windows of radius ``RADIUS`` around pixel ``coords`` (B, 2, h, w) at every level."""
    b, _, h, w = coords.shape
    offsets = torch.linspace(-RADIUS, RADIUS, 2 * RADIUS + 1, device=coords.device)
    # As in RAFT, the first window axis moves x and the second y.
    delta = torch.stack(torch.meshgrid(offsets, offsets, indexing="ij"), -1).view(1, 2 * RADIUS + 1, 2 * RADIUS + 1, 2)
    centre = coords.permute(0, 2, 3, 1).reshape(b * h * w, 1, 1, 2)
    out = []
    for level, volume in enumerate(pyramid):
        grid = centre / 2**level + delta
        height, width = volume.shape[-2:]
        x, y = grid.split(1, dim=-1)
        grid = torch.cat([2 * x / (width - 1) - 1, 2 * y / (height - 1) - 1], -1)
        out.append(F.grid_sample(volume, grid, align_corners=True).view(b, h, w, -1))
    return torch.cat(out, -1).permute(0, 3, 1, 2).contiguous().float()


class BidirCorrelation:
    """All-pairs correlation of the 1/8 features, pooled into pyramids for both directions."""

    def __init__(self, fmap0: torch.Tensor, fmap1: torch.Tensor) -> None:
        b, dim, h, w = fmap0.shape
        corr = fmap0.view(b, dim, h * w).transpose(1, 2) @ fmap1.view(b, dim, h * w)
        corr = corr / torch.sqrt(torch.tensor(dim).float())
        volumes = [corr.reshape(b * h * w, 1, h, w), corr.transpose(1, 2).reshape(b * h * w, 1, h, w)]
        self.pyramids: list[list[torch.Tensor]] = [[v] for v in volumes]
        for _ in range(LEVELS - 1):
            for pyramid in self.pyramids:
                pyramid.append(F.avg_pool2d(pyramid[-1], 2, stride=2))

    def __call__(self, coords0: torch.Tensor, coords1: torch.Tensor) -> torch.Tensor:
        """Frame 0 -> 1 correlations at ``coords0`` and 1 -> 0 at ``coords1``, concatenated."""
        return torch.cat([_lookup(self.pyramids[0], coords0), _lookup(self.pyramids[1], coords1)], 1)


def _pixel_grid(b: int, h: int, w: int, device: torch.device) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    return torch.stack([xs, ys]).float()[None].repeat(b, 1, 1, 1)


class AMT(nn.Module):
    """AMT-S: bidirectional flows to time ``embt``, estimated coarse to fine and refined by correlation lookups.

    The last decoder predicts ``NUM_FLOWS`` flow pairs per pixel; the frames warped by them are blended
    and fused into the interpolated frame.
    """

    def __init__(self) -> None:
        super().__init__()
        c1, c2, c3, c4 = CHANNELS
        self.feat_encoder = FeatureEncoder()
        self.encoder = ImagePyramid()
        self.decoder4 = Decoder(2 * c4 + 1, 2 * c4, c3 + 4)
        self.decoder3 = Decoder(3 * c3 + 4, 3 * c3, c2 + 4)
        self.decoder2 = Decoder(3 * c2 + 4, 3 * c2, c1 + 4)
        self.decoder1 = Decoder(3 * c1 + 4, 3 * c1, 8 * NUM_FLOWS)
        self.update4 = UpdateBlock(c3)
        self.update3 = UpdateBlock(c2, 2)
        self.update2 = UpdateBlock(c1, 4)
        n = NUM_FLOWS
        self.comb_block = nn.Sequential(nn.Conv2d(3 * n, 6 * n, 3, 1, 1), nn.PReLU(6 * n), nn.Conv2d(6 * n, 3, 3, 1, 1))

    def forward(self, img0: torch.Tensor, img1: torch.Tensor, embt: float = 0.5) -> torch.Tensor:
        """The frame at time ``embt`` between ``img0`` and ``img1`` (B, 3, H, W in [0, 1]).

        H and W must be multiples of 16 (see :class:`InputPadder`) and at least ``MIN_SIDE``.
        """
        mean = torch.cat([img0, img1], 2).mean(1, keepdim=True).mean(2, keepdim=True).mean(3, keepdim=True)
        img0, img1 = img0 - mean, img1 - mean
        b, _, h, w = img0.shape
        coord = _pixel_grid(b, h // 8, w // 8, img0.device)
        corr = BidirCorrelation(*self.feat_encoder(torch.cat([img0, img1])).chunk(2))
        f0, f1 = self.encoder(img0), self.encoder(img1)

        def refine(
            update: UpdateBlock, feat: torch.Tensor, flow0: torch.Tensor, flow1: torch.Tensor, down: int
        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            """Update at 1/8: the flows towards t, rescaled to the whole interval, index the correlations."""
            coarse0, coarse1 = flow0, flow1
            if down != 1:
                coarse0, coarse1 = (1 / down) * resize(flow0, 1 / down), (1 / down) * resize(flow1, 1 / down)
            lookup = corr(coord + coarse1 * (1.0 / embt), coord + coarse0 * (1.0 / (1.0 - embt)))
            delta_feat, delta_flow = update(feat, torch.cat([coarse0, coarse1], 1), lookup)
            delta0, delta1 = delta_flow.chunk(2, 1)
            return feat + delta_feat, flow0 + delta0, flow1 + delta1

        def decode(
            decoder: Decoder, feat: torch.Tensor, level: int, flow0: torch.Tensor, flow1: torch.Tensor
        ) -> torch.Tensor:
            return decoder(torch.cat([feat, warp(f0[level], flow0), warp(f1[level], flow1), flow0, flow1], 1))

        out = self.decoder4(torch.cat([f0[3], f1[3], torch.full_like(f0[3][:, :1], embt)], 1))
        feat, flow0, flow1 = refine(self.update4, out[:, 4:], out[:, :2], out[:, 2:4], 1)
        for decoder, update, level, down in ((self.decoder3, self.update3, 2, 2), (self.decoder2, self.update2, 1, 4)):
            out = decode(decoder, feat, level, flow0, flow1)
            flow0 = out[:, :2] + 2.0 * resize(flow0, 2.0)
            flow1 = out[:, 2:4] + 2.0 * resize(flow1, 2.0)
            feat, flow0, flow1 = refine(update, out[:, 4:], flow0, flow1, down)

        n = NUM_FLOWS
        out = decode(self.decoder1, feat, 0, flow0, flow1)
        delta0, delta1, mask, residual = out.split([2 * n, 2 * n, n, 3 * n], 1)
        flow0 = delta0 + 2.0 * resize(flow0, 2.0).repeat(1, n, 1, 1)
        flow1 = delta1 + 2.0 * resize(flow1, 2.0).repeat(1, n, 1, 1)
        fused = self._fuse(img0, img1, flow0, flow1, torch.sigmoid(mask), residual, mean)
        return torch.clamp(fused, 0, 1)

    def _fuse(
        self,
        img0: torch.Tensor,
        img1: torch.Tensor,
        flow0: torch.Tensor,
        flow1: torch.Tensor,
        mask: torch.Tensor,
        residual: torch.Tensor,
        mean: torch.Tensor,
    ) -> torch.Tensor:
        """Blend the frames warped by each flow pair, average, and add the learned correction."""
        b, _, h, w = flow0.shape
        n = NUM_FLOWS

        def per_flow(x: torch.Tensor, channels: int) -> torch.Tensor:
            return x.reshape(b * n, channels, h, w)

        def repeat(x: torch.Tensor) -> torch.Tensor:
            return torch.stack([x] * n, 1).reshape(b * n, *x.shape[1:])

        warped0 = warp(repeat(img0), per_flow(flow0, 2))
        warped1 = warp(repeat(img1), per_flow(flow1, 2))
        m = per_flow(mask, 1)
        blends = m * warped0 + (1 - m) * warped1 + repeat(mean) + per_flow(residual, 3)
        blends = blends.reshape(b, n, 3, h, w)
        return blends.mean(1) + self.comb_block(blends.view(b, 3 * n, h, w))


def load_amt(path: str | Path) -> AMT:
    """AMT-S from the ``"state_dict"`` entry of a checkpoint, loaded strictly, in eval mode.

    VBench needs ``weights_only=False`` for ``amt-s.pth`` (its training metadata is not plain
    data); :func:`load_checkpoint` unpickles that metadata into inert stand-ins instead.
    """
    model = AMT()
    model.load_state_dict(load_checkpoint(path)["state_dict"])
    return model.eval()


@dataclass(frozen=True)
class InputPadder:
    """AMT's ``InputPadder``: replicate-pad to a multiple of 16, split evenly on both sides."""

    left: int
    right: int
    top: int
    bottom: int

    @classmethod
    def for_size(cls, height: int, width: int) -> InputPadder:
        pad_h, pad_w = (-height) % DIVISOR, (-width) % DIVISOR
        return cls(pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, [self.left, self.right, self.top, self.bottom], mode="replicate")

    def unpad(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        return x[..., self.top : h - self.bottom, self.left : w - self.right]
