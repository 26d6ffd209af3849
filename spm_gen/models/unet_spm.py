"""SPMUNet2DModel: a class-conditional DDPM UNet whose middle block reads memory (Zheng et al. 2026).

Down path -> middle -> up path with skip connections, as in DDPM (Ho et al. 2020). In the SPM the middle
block is res block -> fusion -> res block: the query's bottleneck features, average-pooled to
`fusion_pool_size` x `fusion_pool_size` tokens, attend over the tokens of memory images that carry the
query's label (`spm_gen.models.fusion`); the fused tokens are nearest-upsampled and fed to the second res
block. The query's own bottleneck is not passed on: it reaches the decoder only through the skip
connections, so the middle of the network has to take its content from memory.

Memory images go through the same down path and first middle res block (`encode_memory`), without
gradient (memory features are detached, as in the paper). With `memory_encoding="clean"` they enter at
t=0 in training and sampling, so their tokens depend only on the image and its label and are computed
once per bank version; with `"paper"` they are encoded at the current timestep (noised at a random t in
training, as in the official code). `fusion_type="none"` gives the parametric twin: the standard
res -> attention -> res middle block and no memory.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.attention import AttentionMixin
from diffusers.models.attention_processor import Attention, AttnProcessor
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.unets.unet_2d import UNet2DOutput
from diffusers.models.unets.unet_2d_blocks import UNetMidBlock2D, get_down_block, get_up_block
from torch import nn

from ..choices import MemoryEncoding, SkipBypass, UNetFusionType, check_choice
from ..memory.readout import MemoryReadout
from ..utils.images import to_model_range
from .fusion import FusionMemory, MemoryFusion
from .memory_attention import LayeredMemory, MemoryAttention, MemoryLevel, anchor_images


class SPMUNet2DModel(AttentionMixin, ModelMixin, ConfigMixin):
    """Class-conditional UNet with a memory-fusion middle block.

    Args:
        sample_size: image side length.
        in_channels / out_channels: image channels in and predicted channels out.
        block_out_channels: channels per resolution level (DDPM CIFAR-10: 128, 256, 256, 256).
        layers_per_block: res blocks per level on the down path (the up path has one more).
        attention_resolutions: resolutions (side lengths) whose levels have self-attention (DDPM: 16).
        dropout: dropout in every res block (DDPM CIFAR-10: 0.1).
        num_class_embeds: number of classes; label `num_class_embeds` is the null label of guidance.
        fusion_type: `"additive"` (the paper's), `"dot"`, or `"none"` for the parametric twin.
        fusion_pool_size: query and memory bottlenecks are average-pooled to this many tokens per side.
        memory_encoding: `"clean"` (memory at t=0: tokens computed once per bank version) or `"paper"`.
        norm_num_groups: GroupNorm groups.
        fusion_chunk_elements: bound on the additive fusion's intermediate tensor (elements).
        memory_resolutions: resolutions (side lengths, of the levels) whose up blocks also read memory at full
            resolution (`spm_gen.models.memory_attention`); empty: the paper's bottleneck fusion alone.
        skip_bypass: the query's skip connections at `memory_resolutions`: `"keep"`, `"drop"` (zeroed) or
            `"drop_low_noise"` (zeroed for samples with t < `skip_bypass_timestep`).
        skip_bypass_timestep: see `skip_bypass`.
        anchor_pixels: the input also holds, beside the noisy image, the pixels of the first memory item each
            query reads (an anchor readout's anchor: `memory_retrieval="anchor"`; in nearest-support training the
            query's own image where self-support gives it, else its nearest neighbour), so that content reaches
            the output spatially (RetrieveGAN-style), by a path as short as the query's own.
    """

    @register_to_config
    def __init__(
        self,
        sample_size: int = 32,
        in_channels: int = 3,
        out_channels: int = 3,
        block_out_channels: Sequence[int] = (128, 256, 256, 256),
        layers_per_block: int = 2,
        attention_resolutions: Sequence[int] = (16,),
        dropout: float = 0.1,
        num_class_embeds: int = 10,
        fusion_type: UNetFusionType = "additive",
        fusion_pool_size: int = 4,
        memory_encoding: MemoryEncoding = "clean",
        norm_num_groups: int = 32,
        fusion_chunk_elements: int = 4_194_304,  # 2**22 (a literal: configs read the defaults from the source)
        memory_resolutions: Sequence[int] = (),
        skip_bypass: SkipBypass = "keep",
        skip_bypass_timestep: int = 100,
        anchor_pixels: bool = False,
    ) -> None:
        super().__init__()
        check_choice("fusion_type", fusion_type, UNetFusionType)
        check_choice("memory_encoding", memory_encoding, MemoryEncoding)
        check_choice("skip_bypass", skip_bypass, SkipBypass)
        sides = [sample_size // 2**level for level in range(len(block_out_channels))]
        bad = sorted(set(memory_resolutions) - set(sides))
        if bad or len(set(memory_resolutions)) != len(memory_resolutions):
            raise ValueError(
                f"memory_resolutions must be distinct level resolutions of {sides}, got {memory_resolutions}"
            )
        if memory_resolutions and fusion_type == "none":
            raise ValueError("memory_resolutions needs a fusion_type other than 'none' (the twin reads no memory)")
        if skip_bypass != "keep" and not memory_resolutions:
            raise ValueError(f"skip_bypass={skip_bypass!r} needs memory_resolutions (the levels whose skips it drops)")
        if anchor_pixels and fusion_type == "none":
            raise ValueError("anchor_pixels needs a fusion_type other than 'none' (the twin reads no memory)")
        if not 0 < skip_bypass_timestep:
            raise ValueError(f"skip_bypass_timestep must be positive, got {skip_bypass_timestep}")
        if num_class_embeds < 1:
            raise ValueError(f"num_class_embeds must be positive, got {num_class_embeds}")
        bottleneck = sample_size // 2 ** (len(block_out_channels) - 1)
        if fusion_type != "none" and bottleneck < fusion_pool_size:
            raise ValueError(
                f"the bottleneck is {bottleneck}x{bottleneck} (sample_size={sample_size}, {len(block_out_channels)} "
                f"levels), smaller than fusion_pool_size={fusion_pool_size}"
            )
        channels0, time_dim = block_out_channels[0], block_out_channels[0] * 4
        self.conv_in = nn.Conv2d(in_channels * (2 if anchor_pixels else 1), channels0, kernel_size=3, padding=1)
        self.time_proj = Timesteps(channels0, flip_sin_to_cos=False, downscale_freq_shift=1)
        self.time_embedding = TimestepEmbedding(channels0, time_dim)
        self.class_embedding = nn.Embedding(num_class_embeds + 1, time_dim)  # last row: the null label

        common = dict(
            temb_channels=time_dim,
            resnet_eps=1e-6,
            resnet_act_fn="silu",
            resnet_groups=norm_num_groups,
            dropout=dropout,
        )
        self.down_blocks = nn.ModuleList()
        out_ch = channels0
        for level, channels in enumerate(block_out_channels):
            in_ch, out_ch = out_ch, channels
            attention = sample_size // 2**level in attention_resolutions
            self.down_blocks.append(
                get_down_block(
                    "AttnDownBlock2D" if attention else "DownBlock2D",
                    num_layers=layers_per_block,
                    in_channels=in_ch,
                    out_channels=out_ch,
                    add_downsample=level < len(block_out_channels) - 1,
                    attention_head_dim=out_ch,
                    downsample_padding=1,
                    **common,
                )
            )
        mid_ch = block_out_channels[-1]
        resnet = dict(in_channels=mid_ch, temb_channels=time_dim, dropout=dropout, groups=norm_num_groups, eps=1e-6)
        if fusion_type == "none":
            self.mid_block = UNetMidBlock2D(
                in_channels=mid_ch,
                temb_channels=time_dim,
                dropout=dropout,
                resnet_eps=1e-6,
                resnet_groups=norm_num_groups,
                attention_head_dim=mid_ch,
            )
        else:
            self.mid_res_in = ResnetBlock2D(**resnet)
            self.fusion = MemoryFusion(mid_ch, fusion_type, fusion_chunk_elements)
            self.mid_res_out = ResnetBlock2D(**resnet)

        self.up_blocks = nn.ModuleList()
        reversed_channels = list(reversed(block_out_channels))
        out_ch = reversed_channels[0]
        for level, channels in enumerate(reversed_channels):
            prev_ch, out_ch = out_ch, channels
            in_ch = reversed_channels[min(level + 1, len(block_out_channels) - 1)]
            attention = sample_size // 2 ** (len(block_out_channels) - 1 - level) in attention_resolutions
            self.up_blocks.append(
                get_up_block(
                    "AttnUpBlock2D" if attention else "UpBlock2D",
                    num_layers=layers_per_block + 1,
                    in_channels=in_ch,
                    out_channels=out_ch,
                    prev_output_channel=prev_ch,
                    add_upsample=level < len(block_out_channels) - 1,
                    resolution_idx=level,
                    attention_head_dim=out_ch,
                    **common,
                )
            )
        self.conv_norm_out = nn.GroupNorm(norm_num_groups, channels0, eps=1e-6)
        self.conv_out = nn.Conv2d(channels0, out_channels, kernel_size=3, padding=1)
        # created last, so that a model without them initialises every other weight as before
        level_channels = dict(zip(sides, block_out_channels))
        self.memory_attentions = nn.ModuleDict(
            {str(side): MemoryAttention(level_channels[side], side, norm_num_groups) for side in memory_resolutions}
        )
        self._level_sides = tuple(sides)
        self._memory_levels = self._pack_levels(memory_resolutions, level_channels, fusion_pool_size**2)

    # ------------------------------------------------------------------ helpers

    @property
    def null_class_label(self) -> int:
        """The label of the unconditional branch of classifier-free guidance."""
        return self.config.num_class_embeds

    @property
    def uses_memory(self) -> bool:
        return self.config.fusion_type != "none"

    @staticmethod
    def _pack_levels(resolutions: Sequence[int], channels: dict[int, int], offset: int) -> tuple[MemoryLevel, ...]:
        """Each of `resolutions`, finest first, at its place in the packed memory tokens after `offset` tokens."""
        levels = []
        for side in sorted(resolutions, reverse=True):
            levels.append(MemoryLevel(side, offset, channels[side]))
            offset += side**2
        return tuple(levels)

    @property
    def memory_levels(self) -> tuple[MemoryLevel, ...]:
        """Where each of `memory_resolutions` lies in the packed memory tokens, after the bottleneck's."""
        return self._memory_levels

    @property
    def memory_token_shape(self) -> tuple[int, int]:
        """`(tokens per memory item, channels)`: the bottleneck's pooled tokens, then the features of each of
        `memory_levels`, then with `anchor_pixels` the image's pixels (zero-padded to the bottleneck's
        channels)."""
        extra = sum(level.length for level in self.memory_levels) + self._pixel_tokens
        return self.config.fusion_pool_size**2 + extra, self.config.block_out_channels[-1]

    @property
    def _pixel_tokens(self) -> int:
        return self.config.sample_size**2 if self.config.anchor_pixels else 0

    def _embedding(self, timestep: torch.Tensor | float | int, labels: torch.Tensor, batch: int) -> torch.Tensor:
        device = labels.device
        t = torch.as_tensor(timestep, device=device)
        t = (t[None] if t.ndim == 0 else t).expand(batch)
        emb = self.time_embedding(self.time_proj(t).to(self.dtype))
        return emb + self.class_embedding(labels).to(emb.dtype)

    def _check_labels(self, labels: torch.Tensor, name: str, allow_null: bool = True) -> None:
        top = self.config.num_class_embeds + (1 if allow_null else 0)
        if labels.numel() and (labels.min() < 0 or labels.max() >= top):
            bad = sorted(set(labels[(labels < 0) | (labels >= top)].tolist()))
            raise ValueError(f"{name} must be in [0, {top}), got {bad}")

    def _encode(self, sample: torch.Tensor, emb: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """Down path (and, in the SPM, the first middle res block): bottleneck features and skips."""
        h = self.conv_in(sample)
        skips: tuple[torch.Tensor, ...] = (h,)
        for block in self.down_blocks:
            h, res = block(hidden_states=h, temb=emb)
            skips += res
        if self.uses_memory:
            h = self.mid_res_in(h, emb)
        return h, skips

    def _tokens(self, h: torch.Tensor) -> torch.Tensor:
        pool = self.config.fusion_pool_size
        return F.adaptive_avg_pool2d(h, pool).flatten(2).transpose(1, 2)  # (B, pool*pool, C)

    # ------------------------------------------------------------------ public API

    def set_default_attn_processor(self) -> None:
        """diffusers' default processor for the self-attention of the down/up levels (and the twin's middle).
        Processors (`attn_processors`, `set_attn_processor`, from `AttentionMixin`) apply to those layers; the
        memory fusion is not a diffusers attention layer and keeps its own kernels (`compile_fusion`)."""
        self.set_attn_processor(AttnProcessor())

    def set_attention_slice(self, slice_size: int | str | None) -> None:
        """Sliced attention for the down/up levels' self-attention (`pipe.enable_attention_slicing`), as in
        diffusers' UNets: `"auto"` computes each layer in two slices, `"max"` one slice at a time, an int that
        many slices at once, None the default processor again. The memory fusion is not sliced."""
        layers = [m for m in self.modules() if isinstance(m, Attention)]
        for layer in layers:
            if slice_size == "auto":
                size = max(layer.sliceable_head_dim // 2, 1)
            elif slice_size == "max":
                size = 1
            elif slice_size is None or (isinstance(slice_size, int) and not isinstance(slice_size, bool)):
                size = slice_size
            else:
                raise ValueError(f"slice_size must be 'auto', 'max', an int or None, got {slice_size!r}")
            layer.set_attention_slice(size)

    def compile_fusion(self, **compile_kwargs) -> None:
        """Fuses the additive score into one `torch.compile`d kernel (see `MemoryFusion.compile_scores`).

        A runtime choice, not part of the saved config: call it after loading, before sampling or training.
        """
        if not self.uses_memory:
            raise ValueError("this model has fusion_type='none' (the parametric twin): there is no fusion to compile")
        self.fusion.compile_scores(**compile_kwargs)

    def prepare_memory(
        self, memory_tokens: torch.Tensor | None, readout: MemoryReadout | None
    ) -> FusionMemory | LayeredMemory:
        """The fusion's memory side for `memory_tokens` `(M, pool**2, C_bottleneck)` (from `encode_memory`, in
        the readout's item order) and `readout`: projected and grouped once, for any number of forward calls
        (`fusion_memory=`) while the weights stay as they are."""
        if not self.uses_memory:
            raise ValueError("this model has fusion_type='none' (the parametric twin): it reads no memory")
        if memory_tokens is None or readout is None:
            raise ValueError("an SPM needs memory_tokens (from encode_memory) and their readout")
        if tuple(memory_tokens.shape[1:]) != self.memory_token_shape:
            raise ValueError(
                f"memory_tokens must have shape (M, {', '.join(map(str, self.memory_token_shape))}), "
                f"got {tuple(memory_tokens.shape)}"
            )
        memory_tokens = memory_tokens.to(self.dtype).detach()
        levels = self.memory_levels
        if not levels and not self.config.anchor_pixels:
            return self.fusion.prepare(memory_tokens, readout)
        bottleneck = self.fusion.prepare(memory_tokens[:, : self.config.fusion_pool_size**2], readout)
        layers = self.memory_attentions
        anchors = None
        if self.config.anchor_pixels:
            pixels = memory_tokens[:, -self._pixel_tokens :, : self.config.in_channels]
            anchors = anchor_images(pixels, readout, self.config.sample_size)
        return LayeredMemory(
            bottleneck,
            {lvl.resolution: layers[str(lvl.resolution)].prepare(lvl.take(memory_tokens), readout) for lvl in levels},
            anchors,
        )

    @torch.no_grad()
    def encode_memory(
        self, images: torch.Tensor, labels: torch.Tensor, timestep: torch.Tensor | int | None = None
    ) -> torch.Tensor:
        """Memory tokens of `images`, detached (no gradient flows through the memory path).

        Args:
            images (`torch.Tensor` of shape `(M, C, H, W)`): memory images, float in [0, 1] (or uint8).
            labels (`torch.Tensor` of shape `(M,)`): their labels (class embedding of the down path; the null
                label `num_class_embeds` encodes an item without its class, as label dropout in training does).
            timestep: the memory's timestep; None means 0 (clean memory). A tensor of shape `(M,)` gives
                one timestep per image (the paper's training-time noising).

        Returns:
            `torch.Tensor` of shape `(M, *memory_token_shape)`: the bottleneck's `fusion_pool_size**2` tokens,
            then, with `memory_resolutions`, each resolution's features (`memory_levels`).
        """
        if not self.uses_memory:
            raise ValueError("this model has fusion_type='none' (the parametric twin): it reads no memory")
        expected = (self.config.in_channels, self.config.sample_size, self.config.sample_size)
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"memory images must have shape (M, {', '.join(map(str, expected))}), got {tuple(images.shape)}"
            )
        labels = labels.to(images.device)
        if len(labels) != len(images):
            raise ValueError(f"expected {len(images)} memory labels, got {len(labels)}")
        self._check_labels(labels, "memory labels")
        emb = self._embedding(0 if timestep is None else timestep, labels, len(images))
        pixels = to_model_range(images).to(self.dtype)
        # a memory item is encoded as a query reading itself as its anchor
        h, skips = self._encode(torch.cat([pixels, pixels], 1) if self.config.anchor_pixels else pixels, emb)
        tokens = self._tokens(h)
        if not self.memory_levels and not self.config.anchor_pixels:
            return tokens.detach()
        packed = tokens.new_zeros((len(images), *self.memory_token_shape))
        packed[:, : tokens.shape[1]] = tokens
        for level in self.memory_levels:
            features = self._level_features(skips, level.resolution).flatten(2).transpose(1, 2)
            packed[:, level.offset : level.offset + level.length, : level.channels] = features
        if self.config.anchor_pixels:
            packed[:, -self._pixel_tokens :, : pixels.shape[1]] = pixels.flatten(2).transpose(1, 2)
        return packed.detach()

    def _level_features(self, skips: tuple[torch.Tensor, ...], side: int) -> torch.Tensor:
        """The down path's features at resolution `side`: its level's last res block output (before the
        downsampler). `skips` holds conv_in's output, then per level its res blocks' and downsampler's."""
        per_level = self.config.layers_per_block + 1
        level = self._level_sides.index(side)
        return skips[1 + level * per_level + self.config.layers_per_block - 1]

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        class_labels: torch.Tensor,
        memory_tokens: torch.Tensor | None = None,
        readout: MemoryReadout | None = None,
        return_dict: bool = True,
        fusion_memory: FusionMemory | LayeredMemory | None = None,
    ) -> UNet2DOutput | tuple[torch.Tensor]:
        """Predicts the noise of `sample`.

        Args:
            sample (`torch.Tensor` of shape `(B, C, H, W)`): the noisy images.
            timestep (`torch.Tensor` of shape `(B,)`, or a number): the diffusion timestep.
            class_labels (`torch.Tensor` of shape `(B,)`): labels in `[0, num_class_embeds]`; the last value
                (`null_class_label`) is the unconditional label of guidance.
            memory_tokens (`torch.Tensor` of shape `(M, pool**2, C_bottleneck)`): from `encode_memory`, in the
                readout's item order; required unless `fusion_type="none"`.
            readout ([`MemoryReadout`]): which memory items each of the B samples reads
                (`MemoryReadout.from_labels`, or the pipeline's readout for the batch).
            return_dict: return a `UNet2DOutput` instead of a tuple.
            fusion_memory ([`FusionMemory`] or [`LayeredMemory`], *optional*): `prepare_memory(memory_tokens,
                readout)`, given instead of them when one memory serves many calls (the steps of a sampling call).
        """
        batch = sample.shape[0]
        class_labels = torch.as_tensor(class_labels, device=sample.device).reshape(-1).expand(batch)
        self._check_labels(class_labels, "class_labels")
        emb = self._embedding(timestep, class_labels, batch)
        levels: dict[int, FusionMemory] = {}
        if self.uses_memory:
            if fusion_memory is None:
                fusion_memory = self.prepare_memory(memory_tokens, readout)
            anchors = None
            if isinstance(fusion_memory, LayeredMemory):
                fusion_memory, levels, anchors = fusion_memory.bottleneck, fusion_memory.levels, fusion_memory.anchors
            if set(levels) != set(self.config.memory_resolutions):
                raise ValueError(
                    f"fusion_memory has levels {sorted(levels)}, this unet reads {list(self.config.memory_resolutions)}"
                )
            if (anchors is not None) != self.config.anchor_pixels:
                raise ValueError(
                    f"fusion_memory was prepared for another unet (anchor_pixels={self.config.anchor_pixels})"
                )
            if anchors is not None:
                if anchors.shape[0] != batch:
                    raise ValueError(f"the readout has {anchors.shape[0]} queries, the sample {batch}")
                sample = torch.cat([sample, anchors.to(sample.dtype)], 1)
        h, skips = self._encode(sample, emb)
        if self.uses_memory:
            fused = self.fusion(self._tokens(h), memory=fusion_memory)
            pool = self.config.fusion_pool_size
            fused = fused.transpose(1, 2).reshape(batch, -1, pool, pool)
            if fused.shape[-2:] != h.shape[-2:]:  # nearest-upsampled to the bottleneck (the same size: as it is)
                fused = F.interpolate(fused, size=h.shape[-2:], mode="nearest")
            h = self.mid_res_out(fused, emb)
        else:
            h = self.mid_block(h, emb)
        keep = self._skip_keep(timestep, batch, h) if levels else None
        for block in self.up_blocks:
            res, skips = skips[-len(block.resnets) :], skips[: -len(block.resnets)]
            side = h.shape[-1]
            h = (
                block(h, res, emb)
                if side not in levels
                else self._memory_up_block(block, h, res, emb, levels[side], keep)
            )
        h = self.conv_out(F.silu(self.conv_norm_out(h)))
        if not return_dict:
            return (h,)
        return UNet2DOutput(sample=h)

    def _skip_keep(self, timestep: torch.Tensor | float | int, batch: int, like: torch.Tensor) -> torch.Tensor | None:
        """`(B, 1, 1, 1)` factors of the query's skips at memory resolutions (`skip_bypass`); None keeps them."""
        bypass = self.config.skip_bypass
        if bypass == "keep":
            return None
        if bypass == "drop":
            return like.new_zeros((batch, 1, 1, 1))
        t = torch.as_tensor(timestep, device=like.device).reshape(-1).expand(batch)
        return (t >= self.config.skip_bypass_timestep).to(like.dtype)[:, None, None, None]

    def _memory_up_block(self, block: nn.Module, h, res, emb, memory: FusionMemory, keep) -> torch.Tensor:
        """An up block (diffusers' `UpBlock2D` / `AttnUpBlock2D`, step by step) that reads memory after its
        res blocks, before its upsampler; its skips `res` are scaled by `keep` (`skip_bypass`)."""
        attentions = getattr(block, "attentions", None)
        for j, resnet in enumerate(block.resnets):
            skip = res[-1 - j] if keep is None else res[-1 - j] * keep
            h = resnet(torch.cat([h, skip], dim=1), emb)
            if attentions is not None:
                h = attentions[j](h)
        h = self.memory_attentions[str(h.shape[-1])](h, memory)
        for upsampler in block.upsamplers or ():
            h = upsampler(h, temb=emb) if getattr(block, "upsample_type", None) == "resnet" else upsampler(h)
        return h
