"""Attention families for structured pruning: one small adapter per kind of block.

Torch-Pruning's dependency graph decides what shrinks together; an adapter only
says, for its kind of transformer block, what the graph cannot know:

- which Linear layers' outputs are attention heads, and how many (`heads`), so
  whole heads go and each head keeps its dimension;
- which Linear layers are FFN up-projections (`ffn`), pruned at `ffn_ratio`;
- which layers write the residual stream (`residual`): ignored, so the residual
  width (embeddings, LayerNorms, output projections) is never pruned;
- how to tell the modules their new head counts after a step (`sync_`), since
  the forward passes read them as plain attributes;
- whether modules must be converted first (`prepare_`): nn.MultiheadAttention
  cannot lose heads, so it becomes a `compress.models.mha.HeadAttention`.

Adapters match modules by the attributes their forward reads (duck typing), so a
family is one class here, registered by name, and no `isinstance` chain spreads
through the prune stage. A model family names the adapters that apply to it
(`ModelFamily.attention`: `bert` for hf-encoder, none for a CNN); a model of unknown
family or a user's model is looked at by every adapter.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from compress.registry import Registry


@dataclass
class AttentionPlan:
    """What the families found in one model (modules by identity).

    Attributes:
        heads: each head Linear (query, key, value or a fused qkv) -> its head count.
        ffn: FFN up-projections whose outputs are the intermediate width.
        residual: layers whose outputs are the residual width: never pruned.
        families: the names of the families that found something.
    """

    heads: dict[nn.Module, int] = field(default_factory=dict)
    ffn: list[nn.Module] = field(default_factory=list)
    residual: list[nn.Module] = field(default_factory=list)
    families: list[str] = field(default_factory=list)


class AttentionFamily:
    """One kind of attention block. Subclasses override what applies to them."""

    def prepare_(self, model: nn.Module) -> list[str]:
        """Convert modules the pruner cannot handle as they are; returns their names."""
        return []

    def find(self, model: nn.Module, plan: AttentionPlan) -> bool:
        """Add this family's heads, FFN and residual layers to `plan`; True if any."""
        raise NotImplementedError

    def sync_(self, model: nn.Module, heads: dict[nn.Module, int]) -> None:
        """Write each attention module's new head count (`heads`: Linear -> count)."""


ATTENTION_FAMILIES: Registry[type[AttentionFamily]] = Registry("attention family")


@ATTENTION_FAMILIES.register("fused-qkv")
class FusedQKV(AttentionFamily):
    """A module with one fused `qkv` Linear, `num_heads` and `head_dim` (compress's
    `Attention`, timm's ViT, `HeadAttention`); the FFN is a sibling `fc1` (compress's
    and timm's `mlp.fc1`). The residual is left to the dependency graph, as before
    this adapter existed (the `transformer` family's recipes prune it at `ratio`)."""

    @staticmethod
    def _attention(model: nn.Module) -> list[nn.Module]:
        return [
            m
            for m in model.modules()
            if isinstance(getattr(m, "qkv", None), nn.Linear) and hasattr(m, "num_heads")
        ]

    def find(self, model: nn.Module, plan: AttentionPlan) -> bool:
        found = self._attention(model)
        for module in found:
            plan.heads[module.qkv] = module.num_heads
        for block in model.modules():
            mlp = getattr(block, "mlp", block)
            fc1 = getattr(mlp, "fc1", None)
            if isinstance(fc1, nn.Linear) and any(
                isinstance(getattr(c, "qkv", None), nn.Linear) for c in block.children()
            ):
                plan.ffn.append(fc1)
        return bool(found)

    def sync_(self, model: nn.Module, heads: dict[nn.Module, int]) -> None:
        for module in self._attention(model):
            if module.qkv in heads:
                module.num_heads = heads[module.qkv]
                module.head_dim = module.qkv.out_features // (3 * module.num_heads)


@ATTENTION_FAMILIES.register("bert")
class BertLike(AttentionFamily):
    """transformers' BERT-like encoders: a self-attention module with `query`, `key`,
    `value` Linear layers and `num_attention_heads`, `attention_head_size`,
    `all_head_size`, `scaling` (BertSelfAttention in transformers 5 reads
    `attention_head_size` and `scaling` in its forward); a layer with
    `attention.output.dense`, `intermediate.dense` and `output.dense`; embeddings
    with `word_embeddings`. The residual (embeddings, both output projections,
    every LayerNorm after them) is never pruned."""

    @staticmethod
    def _attention(model: nn.Module) -> list[nn.Module]:
        return [
            m
            for m in model.modules()
            if hasattr(m, "num_attention_heads")
            and all(isinstance(getattr(m, n, None), nn.Linear) for n in ("query", "key", "value"))
        ]

    def find(self, model: nn.Module, plan: AttentionPlan) -> bool:
        found = self._attention(model)
        for module in found:
            for linear in (module.query, module.key, module.value):
                plan.heads[linear] = module.num_attention_heads
        for module in model.modules():
            if isinstance(getattr(module, "word_embeddings", None), nn.Embedding):
                plan.residual.append(module)
            intermediate = getattr(getattr(module, "intermediate", None), "dense", None)
            output = getattr(getattr(module, "output", None), "dense", None)
            attention_out = getattr(getattr(getattr(module, "attention", None), "output", None),
                                    "dense", None)  # fmt: skip
            if all(isinstance(m, nn.Linear) for m in (intermediate, output, attention_out)):
                plan.ffn.append(intermediate)
                plan.residual.extend([attention_out, output])
        return bool(found)

    def sync_(self, model: nn.Module, heads: dict[nn.Module, int]) -> None:
        for module in self._attention(model):
            if module.query in heads:
                count = heads[module.query]
                module.num_attention_heads = count
                module.all_head_size = module.query.out_features
                module.attention_head_size = module.all_head_size // count
                module.scaling = module.attention_head_size**-0.5


@ATTENTION_FAMILIES.register("torch-mha")
class TorchEncoderLayer(AttentionFamily):
    """`nn.TransformerEncoderLayer`: its `nn.MultiheadAttention` becomes a
    `HeadAttention` (same function, heads prunable; the fused-qkv family then finds
    its heads), `linear1` is the FFN, `self_attn.out_proj` and `linear2` write the
    residual, which is never pruned."""

    def prepare_(self, model: nn.Module) -> list[str]:
        from compress.models.mha import convert_self_attention_

        return convert_self_attention_(model)

    def find(self, model: nn.Module, plan: AttentionPlan) -> bool:
        from compress.models.mha import HeadAttention

        found = False
        for layer in model.modules():
            if isinstance(layer, nn.TransformerEncoderLayer) and isinstance(
                layer.self_attn, HeadAttention
            ):
                plan.heads[layer.self_attn.qkv] = layer.self_attn.num_heads
                plan.ffn.append(layer.linear1)
                plan.residual.extend([layer.self_attn.out_proj, layer.linear2])
                found = True
        return found


def adapters_for(model: nn.Module) -> list[str]:
    """The adapters that apply to `model`: the ones its family names (`ModelFamily.
    attention`), or every registered one for a model of unknown family or shape.

    Example:
        >>> adapters_for(build_model(TransformerConfig(), (3, 32, 32), 10))  # doctest: +SKIP
        ['fused-qkv']
    """
    from compress.models.checkpoint import spec_of
    from compress.models.family import family_of

    spec = spec_of(model)
    named = family_of(spec.config).attention if spec is not None else None
    if named is None:
        return list(ATTENTION_FAMILIES)
    for name in named:
        ATTENTION_FAMILIES.get(name)  # a name no adapter registered: an error listing them
    return list(named)


def attention_plan(model: nn.Module, adapters: list[str] | None = None) -> AttentionPlan:
    """Run each adapter's `prepare_`, then collect what each finds in `model`.

    Args:
        model: the model to prune.
        adapters: the adapter names to apply (default: `adapters_for(model)`).

    Example:
        >>> plan = attention_plan(model)  # doctest: +SKIP
        >>> sorted(plan.families)  # doctest: +SKIP
        ['bert']
    """
    names = adapters_for(model) if adapters is None else adapters
    families = {name: ATTENTION_FAMILIES.get(name)() for name in names}
    for family in families.values():
        family.prepare_(model)
    plan = AttentionPlan()
    for name, family in families.items():
        if family.find(model, plan):
            plan.families.append(name)
    return plan


def sync_heads_(
    model: nn.Module, heads: dict[nn.Module, int], adapters: list[str] | None = None
) -> None:
    """After a pruning step, every adapter that applies writes its modules' head counts."""
    for name in adapters_for(model) if adapters is None else adapters:
        ATTENTION_FAMILIES.get(name)().sync_(model, heads)


def unconverted_attention(model: nn.Module) -> list[str]:
    """nn.MultiheadAttention layers no family could convert (cross-attention, kdim...)."""
    return [n for n, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)]
