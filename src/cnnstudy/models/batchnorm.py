"""BatchNorm from scratch, and the "noisy" BatchNorm of Santurkar et al. 2018.

`model.norm=bn_scratch` selects BatchNorm1d / BatchNorm2d below (see `blocks.Norm`): drop-ins for
nn.BatchNorm1d / nn.BatchNorm2d with a hand-written backward. Parameters, buffers and state-dict keys are
torch's, so checkpoints load either way; the maths is the same, only slower (plain tensor ops instead of one
fused kernel).

Per channel, over its m values (N for 1d, N*L or N*H*W otherwise):

    mu = sum(x) / m,   var = sum((x - mu)^2) / m,   s = 1 / sqrt(var + eps),   xhat = (x - mu) * s,
    y = gamma * xhat + beta

The gradient is derived in `_BatchNormFunction`. `model.norm=noisy_bn` selects NoisyBatchNorm1d / 2d (torch's
BatchNorm followed by random noise whose distribution changes every training step), at the end of this file.
"""

import torch
from torch import nn
from torch.autograd.function import once_differentiable


def _layout(x: torch.Tensor) -> tuple[list[int], tuple[int, ...]]:
    """The dims reduced per channel (all but dim 1), and the shape that broadcasts a (C,) vector over x."""
    return [d for d in range(x.dim()) if d != 1], (1, -1) + (1,) * (x.dim() - 2)


class _BatchNormFunction(torch.autograd.Function):
    """y = gamma * (x - mean) / sqrt(var + eps) + beta, with its gradient written out by hand.

    `mean` and `var` come in without a graph; `batch_stats` says whether they are this batch's own
    statistics (training) or fixed running estimates (eval). With dy = dL/dy and sums over a channel:

        dbeta = sum(dy),   dgamma = sum(dy * xhat)                      (y is affine in gamma and beta)

    Eval: mean and var are constants, so xhat is affine in x and dx = dy * gamma * s.

    Training: mean and var are functions of every x in the channel, so x_i reaches the loss through
    every xhat_j. With d(mu)/dx_i = 1/m and d(var)/dx_i = 2 (x_i - mu) / m, hence ds/dx_i = -s^2 xhat_i / m:

        d(xhat_j)/dx_i = s (delta_ij - 1/m) - s xhat_j xhat_i / m
        dx_i = sum_j dy_j gamma d(xhat_j)/dx_i = gamma s / m * (m dy_i - sum(dy) - xhat_i sum(dy * xhat))

    The two extra terms take out the part of dy that only shifts the batch (moves mu) or only rescales it
    (moves var): normalisation would undo both, so neither can change the loss.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, mean, var, eps: float, batch_stats: bool):
        # Half and bfloat16 inputs (mixed precision) are normalised in float32, as torch's kernels do.
        acc = torch.promote_types(x.dtype, torch.float32)
        _, shape = _layout(x)
        inv_std = torch.rsqrt(var.to(acc) + eps)
        xhat = (x.to(acc) - mean.to(acc).view(shape)) * inv_std.view(shape)
        y = xhat if weight is None else xhat * weight.view(shape)
        y = y if bias is None else y + bias.view(shape)
        ctx.save_for_backward(xhat, inv_std, weight)
        ctx.batch_stats, ctx.in_dtype = batch_stats, x.dtype
        return y.to(x.dtype)

    @staticmethod
    @once_differentiable  # the backward below is not itself differentiable: refuse double backward
    def backward(ctx, dy):
        xhat, inv_std, weight = ctx.saved_tensors
        dims, shape = _layout(dy)
        dy = dy.to(xhat.dtype)
        sum_dy, sum_dy_xhat = dy.sum(dims), (dy * xhat).sum(dims)
        scale = inv_std if weight is None else weight * inv_std
        if ctx.batch_stats:
            m = dy.numel() // dy.shape[1]
            dx = (scale / m).view(shape) * (m * dy - sum_dy.view(shape) - xhat * sum_dy_xhat.view(shape))
        else:
            dx = dy * scale.view(shape)
        dweight = sum_dy_xhat if ctx.needs_input_grad[1] else None
        dbias = sum_dy if ctx.needs_input_grad[2] else None
        return dx.to(ctx.in_dtype), dweight, dbias, None, None, None, None


def batch_norm(
    x: torch.Tensor,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> torch.Tensor:
    """F.batch_norm's contract: in training, normalise by batch stats and blend them into the running ones."""
    if not training:
        return _BatchNormFunction.apply(x, weight, bias, running_mean, running_var, eps, False)
    m = x.numel() // x.shape[1]
    if m <= 1:
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {tuple(x.shape)}")
    dims, _ = _layout(x)
    with torch.no_grad():  # the backward accounts for mean and var itself
        var, mean = torch.var_mean(x.to(torch.promote_types(x.dtype, torch.float32)), dims, correction=0)
        if running_mean is not None:
            # The running variance estimates the population's, hence the unbiased m / (m - 1), as torch does.
            running_mean.mul_(1 - momentum).add_(mean, alpha=momentum)
            running_var.mul_(1 - momentum).add_(var * (m / (m - 1)), alpha=momentum)
    return _BatchNormFunction.apply(x, weight, bias, mean, var, eps, True)


class _BatchNorm(nn.Module):
    """Parameters, buffers and forward shared by BatchNorm1d and BatchNorm2d; subclasses set the input ranks."""

    input_dims: tuple[int, ...] = ()

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device=None,
        dtype=None,
        *,
        bias: bool = True,  # as in torch: affine=True, bias=False learns gamma only
    ):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        like = {"device": device, "dtype": dtype}
        self.register_parameter("weight", nn.Parameter(torch.empty(num_features, **like)) if affine else None)
        self.register_parameter("bias", nn.Parameter(torch.empty(num_features, **like)) if affine and bias else None)
        track = track_running_stats
        self.register_buffer("running_mean", torch.empty(num_features, **like) if track else None)
        self.register_buffer("running_var", torch.empty(num_features, **like) if track else None)
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device) if track else None)
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        if self.affine:
            nn.init.ones_(self.weight)
            if self.bias is not None:
                nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() not in self.input_dims:
            ranks = " or ".join(f"{d}D" for d in self.input_dims)
            raise ValueError(f"expected {ranks} input (got {x.dim()}D input)")
        if x.shape[1] != self.num_features:
            raise ValueError(f"expected {self.num_features} channels in dim 1, got input of shape {tuple(x.shape)}")
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # a cumulative (equal-weight) average of every batch so far
                factor = 1.0 / float(self.num_batches_tracked)
        # Without running stats there is nothing else to normalise by, so even eval uses the batch's.
        use_batch_stats = self.training or self.running_mean is None
        # Training blends the batch stats into the running ones only while tracking; eval normalises by them.
        running = not self.training or self.track_running_stats
        running_mean, running_var = (self.running_mean, self.running_var) if running else (None, None)
        return batch_norm(x, running_mean, running_var, self.weight, self.bias, use_batch_stats, factor, self.eps)

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
            f"bias={self.bias is not None}, track_running_stats={self.track_running_stats}"
        )


class BatchNorm1d(_BatchNorm):
    """Over (N, C) or (N, C, L) input: statistics per channel C."""

    input_dims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Over (N, C, H, W) input: statistics per channel C, over N, H and W."""

    input_dims = (4,)


NOISE_KINDS = ("channel", "activation")


class _NoisyBatchNorm:
    """BatchNorm, then, in training only, random noise whose distribution is drawn anew at every step.

    Santurkar et al. 2018 ("How does batch normalization help optimization?", section 2.1) perturb BN's
    output so that the next layer's input distribution keeps moving, more internal covariate shift than with
    no BN at all: "each activation for each sample in the batch" gets i.i.d. noise "sampled from a non-zero
    mean and non-unit variance distribution" that "changes at each time step". Two kinds (`noise_kind`):

    activation (the paper's): at every training step, each channel c draws its noise distribution,

        mean_c ~ U(-noise_mean_max, noise_mean_max),   std_c ~ U(0, noise_std_max),

    and every activation i of the channel (every sample, every position) gets its own draw from it:
    y_i = BN(x)_i + mean_c + std_c * n_i, n_i ~ N(0, 1). The channel's output then has mean beta_c + mean_c
    and variance gamma_c^2 + std_c^2 instead of BN's beta_c and gamma_c^2.

    channel (cnnstudy's first version): one draw per channel and step serves every sample and position,

        shift_c ~ N(0, noise_mean_std^2),   scale_c = exp(z_c),  z_c ~ N(0, noise_scale_std^2),

    and y = scale_c * BN(x) + shift_c: a pure affine shift of the distribution the next layer sees, the
    same for the whole batch, no per-activation noise. The scale is log-normal so it stays positive.

    Noise comes from torch's global RNG (seeded per run, saved in checkpoints). Eval adds none: the
    output is plain BN's.
    """

    def __init__(
        self,
        num_features: int,
        noise_kind: str = "channel",
        noise_mean_std: float = 0.5,
        noise_scale_std: float = 0.5,
        noise_mean_max: float = 0.5,
        noise_std_max: float = 1.25,
        **kwargs,
    ):
        if noise_kind not in NOISE_KINDS:
            raise ValueError(f"noise_kind={noise_kind!r} is unknown: use one of {', '.join(NOISE_KINDS)}")
        super().__init__(num_features, **kwargs)
        self.noise_kind = noise_kind
        self.noise_mean_std, self.noise_scale_std = noise_mean_std, noise_scale_std
        self.noise_mean_max, self.noise_std_max = noise_mean_max, noise_std_max

    def noise_distribution(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The activation noise's per-channel (mean, std) for this step: the first draws of its forward."""
        options = {"device": like.device, "dtype": like.dtype}
        mean = (torch.rand(self.num_features, **options) * 2 - 1) * self.noise_mean_max
        std = torch.rand(self.num_features, **options) * self.noise_std_max
        return mean, std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        if not self.training:
            return y
        shape = (1, -1) + (1,) * (y.dim() - 2)
        if self.noise_kind == "activation":
            mean, std = self.noise_distribution(y)
            # drawn in the default layout: i.i.d. draws need no other, and filling a channels_last tensor with
            # normal samples is about 7x slower on a CPU
            noise = torch.randn(y.shape, device=y.device, dtype=y.dtype)
            return torch.addcmul(y + mean.view(shape), std.view(shape), noise)
        like = {"device": y.device, "dtype": y.dtype}
        shift = torch.randn(self.num_features, **like) * self.noise_mean_std
        scale = torch.exp(torch.randn(self.num_features, **like) * self.noise_scale_std)
        return y * scale.view(shape) + shift.view(shape)

    def extra_repr(self) -> str:
        if self.noise_kind == "activation":
            noise = f"noise_mean_max={self.noise_mean_max}, noise_std_max={self.noise_std_max}"
        else:
            noise = f"noise_mean_std={self.noise_mean_std}, noise_scale_std={self.noise_scale_std}"
        return f"{super().extra_repr()}, noise_kind={self.noise_kind}, {noise}"


class NoisyBatchNorm1d(_NoisyBatchNorm, nn.BatchNorm1d):
    """nn.BatchNorm1d with Santurkar et al.'s training-time noise (`_NoisyBatchNorm`)."""


class NoisyBatchNorm2d(_NoisyBatchNorm, nn.BatchNorm2d):
    """nn.BatchNorm2d with Santurkar et al.'s training-time noise (`_NoisyBatchNorm`)."""
