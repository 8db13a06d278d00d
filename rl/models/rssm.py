"""The DreamerV3 world model (Hafner et al. 2023, "Mastering Diverse Domains through World
Models"): the RSSM with a block-GRU deterministic state and categorical latents, the encoders
and decoders for vectors and 64x64 images, the MLP heads, and the distributions the losses use
(symlog, two-hot over symexp bins, unimix categoricals, KL balancing with free bits).

Reference: danijar/dreamerv3 (``dreamerv3/rssm.py``, ``embodied/jax/{nets,heads,outs}.py``):
Linear -> RMSNorm -> SiLU blocks, fan-in truncated-normal init scaled by ``outscale`` (0 for
the reward and value outputs, so they predict exactly 0 at the start), the GRU's update gate
biased by -1, actions divided by max(1, |a|) before the core. The image decoder projects the
latent with one linear layer (the reference's ``bspace`` block projection is left out).

A state is ``(deter [.., D], stoch [.., S, C])``; its feature is their concatenation. Keys are
arguments, so every function is pure and scans.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from rl.nets import MatmulConv, max_pool_2x2, symlog

sg = jax.lax.stop_gradient


def symexp(x):
    """The inverse of symlog: sign(x) (exp(|x|) - 1) (DreamerV3 eq. 1)."""
    return jnp.sign(x) * jnp.expm1(jnp.abs(x))


# -- distributions ---------------------------------------------------------------------------


def twohot_bins(n: int = 255):
    """``n`` bins symexp-spaced over symlog range [-20, 20], exactly symmetric about 0 (the
    reference builds one half and mirrors it)."""
    if n % 2:
        half = symexp(jnp.linspace(-20.0, 0.0, (n - 1) // 2 + 1))
        return jnp.concatenate([half, -half[:-1][::-1]])
    half = symexp(jnp.linspace(-20.0, 0.0, n // 2))
    return jnp.concatenate([half, -half[::-1]])


def twohot(target, bins):
    """[..., n] weights on the two bins around ``target`` (linear in the distance), all on one
    bin when it is outside the range or equal to a bin."""
    n = bins.shape[0]
    wide = jnp.broadcast_to(bins, (*target.shape, n))
    below = jnp.clip((wide <= target[..., None]).sum(-1) - 1, 0, n - 1)
    above = jnp.clip(n - (wide > target[..., None]).sum(-1), 0, n - 1)
    equal = below == above
    d_below = jnp.where(equal, 1.0, jnp.abs(bins[below] - target))
    d_above = jnp.where(equal, 1.0, jnp.abs(bins[above] - target))
    total = d_below + d_above
    return (
        jax.nn.one_hot(below, n) * (d_above / total)[..., None]
        + jax.nn.one_hot(above, n) * (d_below / total)[..., None]
    )


def twohot_loss(logits, target, bins):
    """Cross-entropy of the two-hot ``target`` under ``logits`` [..., n] (DreamerV3 eq. 10)."""
    return -(sg(twohot(target, bins)) * jax.nn.log_softmax(logits, -1)).sum(-1)


def twohot_mean(logits, bins):
    """The predicted value sum_i p_i b_i, summed from the middle out so that uniform
    probabilities over symmetric bins give exactly 0 (as the reference)."""
    p, n = jax.nn.softmax(logits, -1), logits.shape[-1]
    bins = jnp.broadcast_to(bins, p.shape)
    m = n // 2
    if n % 2:
        mid = p[..., m] * bins[..., m]
        return mid + ((p[..., :m] * bins[..., :m])[..., ::-1] + p[..., m + 1 :] * bins[..., m + 1 :]).sum(-1)
    return ((p[..., :m] * bins[..., :m])[..., ::-1] + p[..., m:] * bins[..., m:]).sum(-1)


def unimix(logits, mix: float):
    """Logits of (1 - mix) softmax(logits) + mix uniform: keeps every class's probability
    above mix / C, so KL terms stay finite (DreamerV3 section "Robust predictions")."""
    if not mix:
        return logits
    probs = jax.nn.softmax(logits, -1)
    return jnp.log((1 - mix) * probs + mix / logits.shape[-1])


def categorical_kl(p_logits, q_logits):
    """KL(p || q) per categorical, over the last axis."""
    logp, logq = jax.nn.log_softmax(p_logits, -1), jax.nn.log_softmax(q_logits, -1)
    return (jnp.exp(logp) * (logp - logq)).sum(-1)


def kl_losses(post_logits, prior_logits, free_nats: float = 1.0):
    """(dynamics, representation) losses of DreamerV3 eq. 5, each summed over the S latents
    and clipped below at ``free_nats``: dyn = max(1, KL(sg(post) || prior)) trains the prior,
    rep = max(1, KL(post || sg(prior))) the posterior."""
    dyn = categorical_kl(sg(post_logits), prior_logits).sum(-1)
    rep = categorical_kl(post_logits, sg(prior_logits)).sum(-1)
    return jnp.maximum(dyn, free_nats), jnp.maximum(rep, free_nats)


def straight_through(key, logits):
    """A one-hot sample of each categorical with straight-through gradients (Bengio et al.
    2013): the sample's value, the probabilities' gradient."""
    sample = jax.nn.one_hot(jax.random.categorical(key, logits, -1), logits.shape[-1])
    probs = jax.nn.softmax(logits, -1)
    return sg(sample) + probs - sg(probs)


def lambda_return(last, term, rew, boot, disc: float, lam: float):
    """TD(lambda) returns [B, T-1] of DreamerV3 eq. 7, as the reference's ``lambda_return``:
    R_t = r_{t+1} + disc c_{t+1} ((1 - lam') boot_{t+1} + lam' R_{t+1}), R_{T-1} = boot_{T-1},
    with c = 1 - term and lam' = lam (1 - last) (an episode's last step bootstraps fully)."""
    live = (1.0 - term[:, 1:]) * disc
    cont = (1.0 - last[:, 1:]) * lam
    interm = rew[:, 1:] + (1.0 - cont) * live * boot[:, 1:]

    def back(ret, x):
        i, lv, c = x
        ret = i + lv * c * ret
        return ret, ret

    xs = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), (interm, live, cont))
    _, rets = jax.lax.scan(back, boot[:, -1], xs, reverse=True)
    return jnp.swapaxes(rets, 0, 1)


# -- layers ----------------------------------------------------------------------------------


def winit(scale: float = 1.0):
    """The reference's ``trunc_normal_in`` init with its ``outscale`` (0: zeros)."""
    if scale == 0:
        return nn.initializers.zeros
    return nn.initializers.variance_scaling(scale**2, "fan_in", "truncated_normal")


class Block(nn.Module):
    """Linear -> RMSNorm -> SiLU."""

    units: int

    @nn.compact
    def __call__(self, x):
        return nn.silu(nn.RMSNorm(epsilon=1e-4)(nn.Dense(self.units, kernel_init=winit())(x)))


class Head(nn.Module):
    """``layers`` blocks of ``units``, then a linear output of ``out`` units scaled ``outscale``."""

    layers: int
    units: int
    out: int
    outscale: float = 1.0

    @nn.compact
    def __call__(self, x):
        for _ in range(self.layers):
            x = Block(self.units)(x)
        return nn.Dense(self.out, kernel_init=winit(self.outscale))(x)


class BlockLinear(nn.Module):
    """``blocks`` independent linear maps over equal slices of the input (block-diagonal weight)."""

    units: int
    blocks: int

    @nn.compact
    def __call__(self, x):
        g, n = self.blocks, x.shape[-1]
        shape = (g, n // g, self.units // g)
        fan_in = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal", in_axis=1, out_axis=2)
        kernel = self.param("kernel", fan_in, shape)
        y = jnp.einsum("...ki,kio->...ko", x.reshape(*x.shape[:-1], g, n // g), kernel)
        y = y.reshape(*x.shape[:-1], self.units)
        return y + jnp.broadcast_to(self.param("bias", nn.initializers.zeros, (self.units,)), y.shape)


# -- the RSSM --------------------------------------------------------------------------------


class RSSM(nn.Module):
    """h_t = f(h_{t-1}, z_{t-1}, a_{t-1}) (block GRU); prior p(z_t | h_t); posterior
    q(z_t | h_t, e_t) from the observation's embedding e_t (DreamerV3 eq. 3)."""

    deter: int = 512
    hidden: int = 64
    stoch: int = 32
    classes: int = 4
    blocks: int = 8
    unimix: float = 0.01

    def setup(self):
        self.dyn_in = [Block(self.hidden) for _ in range(3)]
        self.dyn_hid = BlockLinear(self.deter, self.blocks)
        self.dyn_hid_norm = nn.RMSNorm(epsilon=1e-4)
        self.gru = BlockLinear(3 * self.deter, self.blocks)
        self.prior_net = [Block(self.hidden) for _ in range(2)]
        self.prior_out = nn.Dense(self.stoch * self.classes, kernel_init=winit())
        self.post_net = Block(self.hidden)
        self.post_out = nn.Dense(self.stoch * self.classes, kernel_init=winit())

    def __call__(self, deter, stoch, action, embed):  # for init: touches every layer
        deter = self.core(deter, stoch, action)
        return self.prior(deter), self.posterior(deter, embed)

    def core(self, deter, stoch, action):
        """The block GRU of the reference's ``_core``: each of ``blocks`` groups of the deter
        state sees its own slice and the shared embeddings of (h, z, a)."""
        g = self.blocks
        action = action / sg(jnp.maximum(1.0, jnp.abs(action)))
        x = jnp.concatenate(
            [
                self.dyn_in[0](deter),
                self.dyn_in[1](stoch.reshape(*stoch.shape[:-2], -1)),
                self.dyn_in[2](action),
            ],
            -1,
        )
        lead = deter.shape[:-1]
        x = jnp.broadcast_to(x[..., None, :], (*lead, g, x.shape[-1]))
        x = jnp.concatenate([deter.reshape(*lead, g, -1), x], -1).reshape(*lead, -1)
        x = nn.silu(self.dyn_hid_norm(self.dyn_hid(x)))
        parts = self.gru(x).reshape(*lead, g, 3, -1)
        reset, cand, update = (parts[..., i, :].reshape(*lead, -1) for i in range(3))
        reset = jax.nn.sigmoid(reset)
        cand = jnp.tanh(reset * cand)
        update = jax.nn.sigmoid(update - 1.0)
        return update * cand + (1 - update) * deter

    def _logits(self, x, out):
        return unimix(out(x).reshape(*x.shape[:-1], self.stoch, self.classes), self.unimix)

    def prior(self, deter):
        x = deter
        for layer in self.prior_net:
            x = layer(x)
        return self._logits(x, self.prior_out)

    def posterior(self, deter, embed):
        return self._logits(self.post_net(jnp.concatenate([deter, embed], -1)), self.post_out)

    def obs_step(self, carry, embed, prev_action, first, key):
        """One posterior step: the carry and previous action are reset where ``first``."""
        keep = (~first)[..., None].astype(jnp.float32)
        deter, stoch = carry[0] * keep, carry[1] * keep[..., None]
        deter = self.core(deter, stoch, prev_action * keep)
        logits = self.posterior(deter, embed)
        stoch = straight_through(key, logits)
        return (deter, stoch), logits

    def img_step(self, carry, action, key):
        """One prior step (imagination): (deter, stoch) -> the next, sampled from the prior."""
        deter = self.core(carry[0], carry[1], action)
        logits = self.prior(deter)
        return (deter, straight_through(key, logits)), logits


def features(deter, stoch):
    """The state's feature vector: concat(h, flattened z)."""
    return jnp.concatenate([deter, stoch.reshape(*stoch.shape[:-2], -1)], -1)


# -- encoders and decoders -------------------------------------------------------------------


def conv_same(features: int, kernel: int, x, name=None, stride: int = 1):
    """A ``kernel`` x ``kernel`` SAME convolution as one matmul (``MatmulConv`` on the
    zero-padded input: XLA-CPU's convolutions and their gradients are several times slower);
    ``stride`` 2 halves the sides (the kernel must then be even: MatmulConv's space-to-depth)."""
    total = kernel - stride  # SAME: ceil(n / stride) outputs
    p = total // 2
    x = jnp.pad(x, [(0, 0)] * (x.ndim - 3) + [(p, total - p), (p, total - p), (0, 0)])
    return MatmulConv(features, kernel, stride, kernel_init=winit(), name=name)(x)


def upsample_conv(features: int, x, name=None):
    """2x upsampling as a sub-pixel convolution (Shi et al. 2016): a 3x3 SAME convolution to
    4 x ``features`` channels, then each pixel's channels laid out as its 2x2 block. It spans
    what a 4x4 stride-2 transposed convolution computes (each output phase sees a 3x3 input
    neighbourhood), at the input's resolution."""
    y = conv_same(4 * features, 3, x, name=name)
    *lead, h, w, _ = y.shape
    y = y.reshape(*lead, h, w, 2, 2, features)
    return jnp.swapaxes(y, -4, -3).reshape(*lead, 2 * h, 2 * w, features)


class Encoder(nn.Module):
    """symlog(vector) -> MLP, or a uint8 image [64, 64, C] / 255 - 0.5 -> CNN: per stage a
    5x5 SAME conv, 2x2 max-pool, RMSNorm, SiLU (the reference's non-strided variant), flattened.
    ``strided``: a 4x4 stride-2 SAME conv per stage instead (the reference's ``strided=True``
    with an even kernel, which MatmulConv needs): the convolutions run at the output's
    resolution, about 10x less memory traffic on 64x64 frames."""

    image: bool
    units: int = 64
    layers: int = 3
    depth: int = 4
    mults: tuple[int, ...] = (2, 3, 4, 4)
    kernel: int = 5
    strided: bool = False

    @nn.compact
    def __call__(self, obs):
        if not self.image:
            x = symlog(obs.astype(jnp.float32))
            for _ in range(self.layers):
                x = Block(self.units)(x)
            return x
        x = obs.astype(jnp.float32) / 255.0 - 0.5
        lead = x.shape[:-3]
        x = x.reshape(-1, *x.shape[-3:])
        for m in self.mults:
            if self.strided:
                x = conv_same(self.depth * m, 4, x, stride=2)
            else:
                x = max_pool_2x2(conv_same(self.depth * m, self.kernel, x))
            x = nn.silu(nn.RMSNorm(epsilon=1e-4)(x))
        return x.reshape(*lead, -1)


class Decoder(nn.Module):
    """Feature -> symlog(vector) prediction, or -> image in [0, 1] (sigmoid): a linear layer to
    the encoder's smallest grid, then per stage a 2x nearest upsampling and a 5x5 conv.
    ``strided``: per stage a sub-pixel upsampling convolution (``upsample_conv``, in place of
    the reference's stride-2 transposed convolution) at the smaller resolution."""

    obs_shape: tuple[int, ...]
    image: bool
    units: int = 64
    layers: int = 3
    depth: int = 4
    mults: tuple[int, ...] = (2, 3, 4, 4)
    kernel: int = 5
    strided: bool = False

    @nn.compact
    def __call__(self, feat):
        if not self.image:
            return Head(self.layers, self.units, math.prod(self.obs_shape))(feat).reshape(
                *feat.shape[:-1], *self.obs_shape
            )
        h, w, c = self.obs_shape
        factor = 2 ** len(self.mults)
        depths = [self.depth * m for m in self.mults]
        lead = feat.shape[:-1]
        x = nn.Dense((h // factor) * (w // factor) * depths[-1], kernel_init=winit())(
            feat.reshape(-1, feat.shape[-1])
        )
        x = nn.silu(nn.RMSNorm(epsilon=1e-4)(x.reshape(-1, h // factor, w // factor, depths[-1])))
        for d in reversed(depths[:-1]):
            if self.strided:
                x = upsample_conv(d, x)
            else:
                x = conv_same(d, self.kernel, jnp.repeat(jnp.repeat(x, 2, 1), 2, 2))
            x = nn.silu(nn.RMSNorm(epsilon=1e-4)(x))
        if self.strided:
            x = jax.nn.sigmoid(upsample_conv(c, x))
        else:
            x = jax.nn.sigmoid(conv_same(c, self.kernel, jnp.repeat(jnp.repeat(x, 2, 1), 2, 2)))
        return x.reshape(*lead, h, w, c)


def reconstruction_loss(image: bool, pred, obs):
    """Sum of squared errors over the observation's dims: against symlog(obs) for vectors
    (``symlog_mse``), against obs / 255 for images."""
    target = obs.astype(jnp.float32) / 255.0 if image else symlog(obs.astype(jnp.float32))
    err = (pred - sg(target)) ** 2
    return err.reshape(*err.shape[: err.ndim - (3 if image else 1)], -1).sum(-1)
