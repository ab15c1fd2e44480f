"""Vision Transformer (Dosovitskiy et al., 2020) and DeiT (Touvron et al., 2020).

"An image is worth 16x16 words": cut the image into p×p patches, project each linearly to
a token, prepend a learnable class token, add learnable 1-D position embeddings, and run an
unchanged Transformer encoder; the classifier reads the class token at the end. Nothing in
it knows that pixels have neighbours (no convolution, no pooling, no translation
equivariance beyond the patch projection), so it must learn that from data: on ImageNet
alone ViT-B loses to a ResNet, pre-trained on JFT-300M it wins at a fraction of the compute
(2010.11929, section 4). The encoder is pre-norm: LayerNorm before multi-head self-attention
and before the MLP, each inside a residual branch, which trains without warm-up tricks.

DeiT (2012.12877) showed that the data hunger is partly a recipe problem: ViT-Ti/S/B trained
on ImageNet-1k alone, with strong augmentation (RandAugment, mixup, cutmix, random erasing),
stochastic depth and repeated augmentation, reaches 81.8% top-1 for DeiT-B. Its one
architectural change is *distillation through attention*: a second learnable token beside
the class token, with its own linear head, trained to match a CNN teacher's predictions
while the class token learns from the labels. The two tokens talk to each other and to the
patches through attention; at inference the two heads' logits are averaged (the distilled
DeiT-Ti goes from 72.2 to 74.5 top-1). Here DeiT is this ViT with `distilled=True`: the
network returns (class logits, distillation logits) in training mode, their mean in eval.

Where a patch sits reaches the encoder only through the position embeddings added to the
tokens: without them the encoder sees a bag of patches (it is permutation-equivariant).
`pos_embedding` chooses their kind, the four of the ViT paper's appendix D.4: "learned"
(the paper's and DeiT's, and the default: one learned D-vector per token, class token
included, (N + 1)·D parameters), "learned_2d" (a learned table of D/2-vectors per row and
another per column, concatenated for the patch at (row, column): (rows + columns)·D/2
parameters), "sincos" (fixed 2-D sines and cosines of the row and column, as in MoCo v3 and
"Better plain ViT baselines": no parameters) and "none". In the paper's Table 8 any kind
beats none by about 3 points and the kinds differ by 0.2 at most. The class and
distillation tokens have no place in the grid: "learned" gives them their own learned
embedding (as the paper does), the other kinds add nothing to them, which loses nothing,
since a learned token plus a constant is just another learned token.

A ViT is trained at one resolution and often fine-tuned at a higher one (DeiT-B at 384 px):
the patches stay 16×16, so the grid grows and the position embeddings of the patch tokens
are resized bicubically as a 2-D image; those of the class and distillation tokens are kept.
`convert_checkpoint` does that when a checkpoint from another image size is loaded
(`create_model(name, img_size=384, pretrained=path_at_224)`), and the forward pass does it
on the fly for an input whose grid differs from the one the model was built for (the stored
embeddings stay at `img_size`), as timm's `dynamic_img_size` does. The row and column
tables of "learned_2d" are resized linearly along their one axis; "sincos" is computed for
any grid, and "none" has nothing to resize.

`small_input=True` is for 28-64 px images: the patch becomes 4×4 (a 32 px image is then an
8×8 grid of 64 tokens instead of a 2×2 grid of 16×16 patches), and `img_size` defaults to
32; width and depth stay those of the variant. The `*_patch4_32` / `*_patch2_32` variants
are small ViTs for such images (6 blocks), the ones to pit against small CNNs: without the
convolution's locality prior they need more data or augmentation for the same accuracy.
"""
from __future__ import annotations

import contextlib
import math
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from archlab.models.layers import Attention, DropPath, ImageClassifier, Mlp, PatchEmbed
from archlab.models.registry import INCEPTION_MEAN, INCEPTION_STD, Paper, register_model

VIT = Paper(
    "An Image is Worth 16x16 Words: Transformers for Image Recognition at Scale", 2020,
    "2010.11929", "vit",
    "An image is a sequence of 16x16 patches: project each linearly, add a class token and "
    "learned position embeddings, and run a plain Transformer encoder. With no convolutional "
    "prior it needs large pre-training data (JFT-300M) to beat CNNs, and then does so at "
    "less compute.")
DEIT = Paper(
    "Training data-efficient image transformers & distillation through attention", 2020,
    "2012.12877", "deit",
    "ViT trained on ImageNet-1k alone, with a distillation token: a second token beside the "
    "class token, with its own head, learns from a CNN teacher's predictions through "
    "attention; at inference the two heads are averaged (DeiT-Ti 72.2 -> 74.5 top-1).")


def resize_pos_embedding(pos_embedding: torch.Tensor, new_grid: tuple[int, int],
                         num_prefix_tokens: int = 1,
                         old_grid: tuple[int, int] | None = None) -> torch.Tensor:
    """Resize position embeddings (1, prefix + gh*gw, D) to another patch grid.

    The patch tokens' embeddings are a (gh, gw) image with D channels, resized bicubically
    (align_corners=False, as DeiT's fine-tuning at 384 px does); the prefix tokens (class,
    distillation) have no place in the grid and are kept as they are. `old_grid` defaults
    to the square grid the token count implies.
    """
    prefix = pos_embedding[:, :num_prefix_tokens]
    patches = pos_embedding[:, num_prefix_tokens:]
    n, dim = patches.shape[1], patches.shape[2]
    if old_grid is None:
        side = math.isqrt(n)
        if side * side != n:
            raise ValueError(
                f"position embeddings hold {n} patch tokens (after {num_prefix_tokens} "
                f"prefix tokens), which is no square grid; pass old_grid=(rows, columns)")
        old_grid = (side, side)
    if old_grid[0] * old_grid[1] != n:
        raise ValueError(f"position embeddings hold {n} patch tokens, not the "
                         f"{old_grid[0]}x{old_grid[1]} grid given")
    grid = patches.reshape(1, old_grid[0], old_grid[1], dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid.float(), size=tuple(new_grid), mode="bicubic",
                         align_corners=False)
    patches = grid.permute(0, 2, 3, 1).reshape(1, -1, dim).to(pos_embedding.dtype)
    return torch.cat([prefix, patches], dim=1)


POS_EMBEDDINGS = ("learned", "learned_2d", "sincos", "none")


def sincos_pos_embedding(grid: tuple[int, int], dim: int, temperature: float = 10000.0
                         ) -> torch.Tensor:
    """Fixed 2-D position embeddings (1, rows*cols, dim) of a patch grid, row-major: a
    quarter of the channels are sin(x·ω) and a quarter cos(x·ω) for the column x, the other
    half the same for the row y, with ω running geometrically from 1 down to 1/temperature
    (the Transformer's 1-D sines, once per axis; MoCo v3, 2104.02057). `dim` divides by 4."""
    if dim % 4:
        raise ValueError(f"sin-cos position embeddings split {dim} channels into sin and cos "
                         "of rows and columns: use an embed_dim divisible by 4")
    y, x = torch.meshgrid(torch.arange(grid[0], dtype=torch.float32),
                          torch.arange(grid[1], dtype=torch.float32), indexing="ij")
    omega = 1.0 / temperature ** (torch.arange(dim // 4, dtype=torch.float32) / (dim // 4))
    x, y = x.reshape(-1, 1) * omega, y.reshape(-1, 1) * omega
    return torch.cat([x.sin(), x.cos(), y.sin(), y.cos()], dim=1).unsqueeze(0)


def resize_axis_embedding(table: torch.Tensor, n: int) -> torch.Tensor:
    """A (positions, channels) table of one axis's embeddings (learned 2-D) resized to `n`
    positions, linearly along the axis (align_corners=False, as the bicubic 2-D resize)."""
    if table.shape[0] == n:
        return table
    out = F.interpolate(table.float().t().unsqueeze(0), size=n, mode="linear",
                        align_corners=False)
    return out.squeeze(0).t().to(table.dtype)


class Block(nn.Module):
    """One pre-norm encoder layer: x + MSA(LN(x)), then x + MLP(LN(x)) (2010.11929 eq. 2-3)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0,
                 act: str | type[nn.Module] = "gelu") -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop,
                              proj_drop=drop)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act=act, drop=drop)
        self.drop_path = DropPath(drop_path) if drop_path else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class VisionTransformer(ImageClassifier):
    """ViT, and DeiT with `distilled=True`.

    `img_size` is the side the position embeddings are stored for (224; 32 with
    `small_input`); other sizes at or above one patch also run, their embeddings resized on
    the fly. `drop_rate` is the paper's dropout after the position embeddings and in every
    dense layer but the qkv projection; `drop_path_rate` the stochastic depth of the last
    block (rising linearly from 0 at the first; DeiT trains with 0.1).

    `global_pool="avg"` classifies the mean of the patch tokens instead of the class token,
    with the final LayerNorm applied after the pooling (timm's `fc_norm`), as in the ViT
    paper's own ablation (appendix D.3) and Beyer et al.'s "Better plain ViT baselines"
    (2205.01580); `class_token=False` then drops the unused token, as timm does. The mean
    of every patch trains sooner than a token that must first learn where to look, which
    counts when the whole training is a few epochs (the quick tour's ViT: +0.7 points).

    `pos_embedding` is the kind of position embedding (POS_EMBEDDINGS; the module docstring
    says what each is): "learned" stores `pos_embedding` (1, tokens, D); "learned_2d"
    stores `pos_embedding_rows` (rows, D/2) and `pos_embedding_cols` (columns, D/2); the
    others store none (`pos_embedding` is then None).
    """

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, small_input: bool = False,
                 img_size: int | None = None, patch_size: int = 16, embed_dim: int = 768,
                 depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, distilled: bool = False, drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 small_patch_size: int = 4, global_pool: str = "token",
                 class_token: bool = True, act: str | type[nn.Module] = "gelu",
                 pos_embedding: str = "learned") -> None:
        super().__init__()
        if pos_embedding not in POS_EMBEDDINGS:
            raise ValueError(f"pos_embedding={pos_embedding!r}: use one of "
                             f"{', '.join(POS_EMBEDDINGS)}")
        if pos_embedding == "learned_2d" and embed_dim % 2:
            raise ValueError(f"learned 2-D position embeddings give rows and columns half of "
                             f"the {embed_dim} channels each: use an even embed_dim")
        if global_pool not in ("token", "avg"):
            raise ValueError(f"global_pool={global_pool!r}: use 'token' (the class token, as "
                             "in the paper) or 'avg' (the mean of the patch tokens)")
        if global_pool == "token" and not class_token:
            raise ValueError("global_pool='token' reads the class token; keep class_token=True "
                             "or pool with global_pool='avg'")
        if distilled and (global_pool != "token" or not class_token):
            raise ValueError("a distilled DeiT reads its class and distillation tokens; it "
                             "needs global_pool='token' and class_token=True")
        if small_input:
            # A 16×16 patch of a 32 px image leaves a 2×2 grid: too few tokens to attend over.
            patch_size = min(patch_size, small_patch_size)
        img_size = img_size or (32 if small_input else 224)
        if img_size < patch_size:
            raise ValueError(f"img_size {img_size} is smaller than one {patch_size}x{patch_size} "
                             "patch; use a larger img_size or a smaller patch_size")
        self.num_classes, self.in_chans = num_classes, in_chans
        self.img_size, self.patch_size = img_size, patch_size
        self.embed_dim, self.depth, self.num_heads = embed_dim, depth, num_heads
        self.distilled, self.global_pool = distilled, global_pool
        self.num_prefix_tokens = int(class_token) + int(distilled)
        self.num_features = embed_dim
        self.min_input_size = patch_size

        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        self.grid_size = self.patch_embed.grid_size
        self.num_tokens = self.num_prefix_tokens + self.patch_embed.num_patches
        self.class_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if class_token else None
        self.dist_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if distilled else None
        self.pos_embedding_kind = pos_embedding
        self._build_pos_embedding()
        self.pos_drop = nn.Dropout(drop_rate)
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.Sequential(*[
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, drop_rate, attn_drop_rate, r, act)
            for r in rates])
        # With average pooling the LayerNorm moves after the pooling (timm's fc_norm).
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6) if global_pool == "token" else nn.Identity()
        self.fc_norm = nn.LayerNorm(embed_dim, eps=1e-6) if global_pool == "avg" else None
        self.head = nn.Linear(embed_dim, num_classes) if num_classes else nn.Identity()
        self.head_dist = (nn.Linear(embed_dim, num_classes) if num_classes else nn.Identity()
                          ) if distilled else None
        self.feature_info = [dict(num_chs=embed_dim, reduction=patch_size, module=f"blocks.{i}")
                             for i in range(depth)]
        self._init_weights()

    def _build_pos_embedding(self) -> None:
        kind, dim, (rows, cols) = self.pos_embedding_kind, self.embed_dim, self.grid_size
        self.register_parameter("pos_embedding", nn.Parameter(
            torch.zeros(1, self.num_tokens, dim)) if kind == "learned" else None)
        if kind == "learned_2d":
            self.pos_embedding_rows = nn.Parameter(torch.zeros(rows, dim // 2))
            self.pos_embedding_cols = nn.Parameter(torch.zeros(cols, dim - dim // 2))
        if kind == "sincos":
            # Fixed: a buffer left out of the checkpoint, computed again on loading.
            self.register_buffer("pos_embedding_fixed",
                                 sincos_pos_embedding((rows, cols), dim), persistent=False)

    def _init_weights(self) -> None:
        # BERT's and DeiT's init: truncated normal, std 0.02, for tokens, embeddings and
        # every linear layer; zero biases.
        for p in (self.class_token, self.dist_token, self.pos_embedding,
                  getattr(self, "pos_embedding_rows", None),
                  getattr(self, "pos_embedding_cols", None)):
            if p is not None:
                nn.init.trunc_normal_(p, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    # -- the network ---------------------------------------------------------------------
    def _pos_embedding_for(self, grid: tuple[int, int]) -> torch.Tensor | None:
        """The embeddings added to the tokens of an input with this patch grid, (1, tokens,
        D), or None for "none"."""
        grid, kind = tuple(grid), self.pos_embedding_kind
        if kind == "none":
            return None
        if kind == "learned":
            if grid == tuple(self.grid_size):
                return self.pos_embedding
            return resize_pos_embedding(self.pos_embedding, grid, self.num_prefix_tokens,
                                        old_grid=self.grid_size)
        if kind == "sincos":
            patches = (self.pos_embedding_fixed if grid == tuple(self.grid_size) else
                       sincos_pos_embedding(grid, self.embed_dim).to(self.pos_embedding_fixed))
        else:   # learned_2d: the patch at (r, c) gets [row r's half, column c's half]
            rows = resize_axis_embedding(self.pos_embedding_rows, grid[0])
            cols = resize_axis_embedding(self.pos_embedding_cols, grid[1])
            patches = torch.cat([rows[:, None].expand(-1, grid[1], -1),
                                 cols[None, :].expand(grid[0], -1, -1)], dim=-1)
            patches = patches.reshape(1, grid[0] * grid[1], self.embed_dim)
        # The class and distillation tokens have no row or column: nothing is added to them.
        prefix = patches.new_zeros(1, self.num_prefix_tokens, self.embed_dim)
        return torch.cat([prefix, patches], dim=1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        grid = (x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size)
        x = self.patch_embed(x)
        prefix = [t for t in (self.class_token, self.dist_token) if t is not None]
        x = torch.cat([t.expand(x.shape[0], -1, -1) for t in prefix] + [x], dim=1)
        pos = self._pos_embedding_for(grid)
        x = self.pos_drop(x if pos is None else x + pos)
        return self.norm(self.blocks(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False
                     ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if self.global_pool == "avg":
            x = self.fc_norm(x[:, self.num_prefix_tokens:].mean(dim=1))
            return x if pre_logits else self.head(x)
        if not self.distilled:
            return x[:, 0] if pre_logits else self.head(x[:, 0])
        cls, dist = x[:, 0], x[:, 1]
        if pre_logits:
            return (cls + dist) / 2
        cls, dist = self.head(cls), self.head_dist(dist)
        if self.training:
            # The class head learns from the labels, the distillation head from the teacher.
            return cls, dist
        return (cls + dist) / 2

    def get_classifier(self) -> nn.Module | tuple[nn.Module, nn.Module]:
        return (self.head, self.head_dist) if self.distilled else self.head

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes

        def linear() -> nn.Module:
            if not num_classes:
                return nn.Identity()
            fc = nn.Linear(self.embed_dim, num_classes)
            nn.init.trunc_normal_(fc.weight, std=0.02)
            nn.init.zeros_(fc.bias)
            return fc

        self.head = linear()
        if self.distilled:
            self.head_dist = linear()

    # -- looking inside ------------------------------------------------------------------
    @contextlib.contextmanager
    def keeping_attention(self) -> Iterator[None]:
        """Within this block every layer keeps its attention probabilities: after a forward
        pass, `model.blocks[i].attn.attention_probs` is (N, heads, tokens, tokens). Outside
        it the layers run the fused kernel and keep nothing."""
        layers = [block.attn for block in self.blocks]
        before = [a.keep_attention for a in layers]
        for a in layers:
            a.keep_attention, a.attention_probs = True, None
        try:
            yield
        finally:
            for a, keep in zip(layers, before):
                a.keep_attention = keep

    def forward_attention(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The attention probabilities of every layer for `x`, first layer first, each
        (N, heads, tokens, tokens) with rows summing to 1: for attention maps and rollout."""
        with self.keeping_attention():
            self(x)
            maps = [block.attn.attention_probs for block in self.blocks]
        for block in self.blocks:
            block.attn.attention_probs = None
        return maps

    # -- checkpoints ---------------------------------------------------------------------
    def convert_checkpoint(self, state_dict: dict[str, torch.Tensor], source: str
                           ) -> dict[str, torch.Tensor]:
        """Rename (timm, torchvision) and fit the position embeddings to this model's grid."""
        out = super().convert_checkpoint(state_dict, source)
        pos = out.get("pos_embedding")
        theirs_prefix = ("class_token" in out) + ("dist_token" in out)
        if (pos is not None and pos.ndim == 3 and pos.shape[-1] == self.embed_dim
                and theirs_prefix == self.num_prefix_tokens
                and pos.shape[1] != self.num_tokens):
            out["pos_embedding"] = resize_pos_embedding(pos, self.grid_size,
                                                        self.num_prefix_tokens)
        for key, n in (("pos_embedding_rows", self.grid_size[0]),
                       ("pos_embedding_cols", self.grid_size[1])):
            if self.pos_embedding_kind == "learned_2d" and key in out and out[key].ndim == 2:
                out[key] = resize_axis_embedding(out[key], n)
        return out

    checkpoint_key_maps = {
        "timm": [(r"^cls_token$", "class_token"), (r"^pos_embed$", "pos_embedding")],
        "torchvision": [
            (r"^conv_proj\.", "patch_embed.proj."),
            (r"^encoder\.pos_embedding$", "pos_embedding"),
            (r"^encoder\.ln\.", "norm."),
            (r"^encoder\.layers\.encoder_layer_(\d+)\.", r"blocks.\1."),
            (r"\.ln_1\.", ".norm1."), (r"\.ln_2\.", ".norm2."),
            # nn.MultiheadAttention keeps q, k and v stacked in one (3D, D) matrix, in the
            # same order as our qkv projection.
            (r"\.self_attention\.in_proj_weight$", ".attn.qkv.weight"),
            (r"\.self_attention\.in_proj_bias$", ".attn.qkv.bias"),
            (r"\.self_attention\.out_proj\.", ".attn.proj."),
            (r"\.mlp\.0\.", ".mlp.fc1."), (r"\.mlp\.3\.", ".mlp.fc2."),
            (r"^heads\.head\.", "head."),
        ],
    }


# The sizes of 2010.11929 Table 1, and DeiT's Ti and S (Table 1 there).
_TI = dict(embed_dim=192, depth=12, num_heads=3)
_S = dict(embed_dim=384, depth=12, num_heads=6)
_B = dict(embed_dim=768, depth=12, num_heads=12)
_L = dict(embed_dim=1024, depth=24, num_heads=16)
# For 28-64 px images: half the depth of Ti/S, 4×4 (or 2×2) patches of a 32 px image.
_TI_SMALL = dict(embed_dim=192, depth=6, num_heads=3, img_size=32)
_S_SMALL = dict(embed_dim=384, depth=6, num_heads=6, img_size=32)

_VIT = dict(paper=VIT, mean=INCEPTION_MEAN, std=INCEPTION_STD)
# timm's ImageNet weights (ViT's and DeiT's) are evaluated with bicubic resizing from 224/0.9.
_TIMM = dict(interpolation="bicubic", crop_pct=0.9)
_SMALL_IDEA = ("A ViT cut down for 32 px images: {p}x{p} patches ({g}x{g} = {t} tokens) and "
               "6 blocks. Without the convolution's locality prior it needs strong "
               "augmentation or more data to match a small CNN on CIFAR-sized images.")

# The ImageNet ViTs: name (timm's too), size, patch, parameters, torchvision's name if it has
# the net (whose count is then the card's).
_IMAGENET = (
    ("vit_tiny_patch16_224", _TI, 16, 5_717_416, None),
    ("vit_small_patch16_224", _S, 16, 22_050_664, None),
    ("vit_small_patch32_224", _S, 32, 22_878_952, None),
    ("vit_base_patch16_224", _B, 16, 86_567_656, "vit_b_16"),
    ("vit_base_patch32_224", _B, 32, 88_224_232, "vit_b_32"),
    ("vit_large_patch16_224", _L, 16, 304_326_632, "vit_l_16"),
    ("vit_large_patch32_224", _L, 32, 306_535_400, "vit_l_32"),
)
for _name, _size, _patch, _params, _tv in _IMAGENET:
    register_model(_name, VisionTransformer, **_VIT, params=_params,
                   params_source="tv" if _tv else "timm",
                   peers={"torchvision": _tv, "timm": _name} if _tv else {"timm": _name},
                   patch_size=_patch, **_TIMM, **_size)

register_model("vit_tiny_patch4_32", VisionTransformer, **_VIT, input_size=32,
               idea=_SMALL_IDEA.format(p=4, g=8, t=64), patch_size=4, **_TI_SMALL)
register_model("vit_tiny_patch2_32", VisionTransformer, **_VIT, input_size=32,
               idea=_SMALL_IDEA.format(p=2, g=16, t=256), patch_size=2, **_TI_SMALL)
register_model("vit_small_patch4_32", VisionTransformer, **_VIT, input_size=32,
               idea=_SMALL_IDEA.format(p=4, g=8, t=64), patch_size=4, **_S_SMALL)

_DEIT_IDEA = ("ViT trained on ImageNet-1k alone in three days on one machine: the recipe "
              "(RandAugment, mixup, cutmix, random erasing, stochastic depth, repeated "
              "augmentation) closes most of the gap to CNNs without extra data.")
register_model("deit_tiny_patch16_224", VisionTransformer, paper=DEIT, idea=_DEIT_IDEA,
               params=5_717_416, params_source="timm", peers={"timm": "deit_tiny_patch16_224"},
               patch_size=16, **_TIMM, **_TI)
register_model("deit_small_patch16_224", VisionTransformer, paper=DEIT, idea=_DEIT_IDEA,
               params=22_050_664, params_source="timm",
               peers={"timm": "deit_small_patch16_224"}, **_TIMM, patch_size=16, **_S)
register_model("deit_base_patch16_224", VisionTransformer, paper=DEIT, idea=_DEIT_IDEA,
               params=86_567_656, params_source="timm", peers={"timm": "deit_base_patch16_224"},
               patch_size=16, **_TIMM, **_B)
register_model("deit_tiny_distilled_patch16_224", VisionTransformer, paper=DEIT,
               params=5_910_800, params_source="timm",
               peers={"timm": "deit_tiny_distilled_patch16_224"}, **_TIMM, patch_size=16,
               distilled=True, **_TI)
register_model("deit_small_distilled_patch16_224", VisionTransformer, paper=DEIT,
               params=22_436_432, params_source="timm",
               peers={"timm": "deit_small_distilled_patch16_224"}, **_TIMM, patch_size=16,
               distilled=True, **_S)
register_model("deit_base_distilled_patch16_224", VisionTransformer, paper=DEIT,
               params=87_338_192, params_source="timm",
               peers={"timm": "deit_base_distilled_patch16_224"}, **_TIMM, patch_size=16,
               distilled=True, **_B)
register_model("deit_tiny_distilled_patch4_32", VisionTransformer, paper=DEIT, input_size=32,
               idea="The distilled DeiT-Ti cut down for 32 px images (4x4 patches, 6 blocks): "
                    "a distillation token learns from a CNN teacher, the setting in which "
                    "DeiT's distillation helps a data-starved ViT most.",
               patch_size=4, distilled=True, **_TI_SMALL)
