"""Tests of train/model.py and train/moe_layer.py (CPU, tiny sizes)."""

from __future__ import annotations

import math
from dataclasses import asdict

import pytest
import torch
from safetensors.torch import save_file

from train.bench_layer import run_layer_bench
from train.model import GPT, GPTConfig, make_config
from train.moe_layer import (
    MoEFFN,
    _ExpertBias,
    _GatherRows,
    dispatch_plan,
    grouped_mm_supported,
    load_balancing_loss,
    reference_moe_forward,
    resolve_impl,
    route,
    router_z_loss,
)
from train.upcycle import upcycle

CPU = torch.device("cpu")
GMM_ON_CPU = grouped_mm_supported(CPU, torch.float32)
IMPLS = ["bmm"] + (["grouped_mm"] if GMM_ON_CPU else [])


def make_layer(top_k: int, impl: str = "bmm", d: int = 16, n_experts: int = 4,
               seed: int = 0) -> MoEFFN:
    layer = MoEFFN(d, n_experts, top_k, impl=impl)
    layer.init_weights(std=0.3, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():  # nonzero biases so their gradients are exercised too
        layer.c_fc_bias.normal_(0, 0.1, generator=torch.Generator().manual_seed(seed + 1))
        layer.c_proj_bias.normal_(0, 0.1, generator=torch.Generator().manual_seed(seed + 2))
    return layer


def grads(out: torch.Tensor, wrt: list[torch.Tensor], seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed))
    return torch.autograd.grad((out * g).sum(), wrt, retain_graph=True)


# ------------------------------------------------------------------ layer vs naive reference


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("top_k", [1, 2])
def test_moe_layer_matches_reference_forward_and_gradients(top_k: int, impl: str) -> None:
    layer = make_layer(top_k, impl).eval()
    x = torch.randn(3, 7, 16, generator=torch.Generator().manual_seed(1), requires_grad=True)
    got = layer(x)
    want = reference_moe_forward(layer, x)
    torch.testing.assert_close(got.out, want.out, atol=1e-5, rtol=1e-5)
    assert torch.equal(got.topk_idx, want.topk_idx)
    torch.testing.assert_close(got.probs, want.probs)
    torch.testing.assert_close(got.lb_loss, want.lb_loss)
    torch.testing.assert_close(got.z_loss, want.z_loss)
    wrt = [x, layer.router.weight, layer.c_fc_weight, layer.c_fc_bias, layer.c_proj_weight,
           layer.c_proj_bias]
    names = ["x", "router", "c_fc_weight", "c_fc_bias", "c_proj_weight", "c_proj_bias"]
    for name, a, b in zip(names, grads(got.out, wrt), grads(want.out, wrt), strict=True):
        assert a.abs().sum() > 0, name
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=name)
    # aux-loss gradients reach the router identically too
    wrt = [layer.router.weight]
    a = torch.autograd.grad(got.lb_loss + got.z_loss, wrt, retain_graph=True)[0]
    b = torch.autograd.grad(want.lb_loss + want.z_loss, wrt)[0]
    torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


@pytest.mark.skipif(not GMM_ON_CPU, reason="torch._grouped_mm not available on CPU here")
@pytest.mark.parametrize("top_k", [1, 2])
def test_bmm_and_grouped_mm_paths_agree(top_k: int) -> None:
    a = make_layer(top_k, "bmm", n_experts=5).eval()
    b = make_layer(top_k, "grouped_mm", n_experts=5).eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 33, 16, generator=torch.Generator().manual_seed(3), requires_grad=True)
    oa, ob = a(x), b(x)
    torch.testing.assert_close(oa.out, ob.out, atol=1e-5, rtol=1e-5)
    ga = grads(oa.out, [x, a.c_fc_weight, a.c_proj_weight, a.router.weight])
    gb = grads(ob.out, [x, b.c_fc_weight, b.c_proj_weight, b.router.weight])
    for u, v in zip(ga, gb, strict=True):
        torch.testing.assert_close(u, v, atol=1e-5, rtol=1e-5)


WRT = ["x", "router", "c_fc_weight", "c_fc_bias", "c_proj_weight", "c_proj_bias"]


def wrt_of(layer: MoEFFN, x: torch.Tensor) -> list[torch.Tensor]:
    return [x, layer.router.weight, layer.c_fc_weight, layer.c_fc_bias, layer.c_proj_weight,
            layer.c_proj_bias]


# torch._grouped_mm's meta function (what torch.compile traces with) takes bf16 only, on any
# device: the compiled grouped_mm path is checked under CPU bf16 autocast, as on the GPU.
COMPILED = [("bmm", torch.float32)] + ([("grouped_mm", torch.bfloat16)] if GMM_ON_CPU else [])


@pytest.mark.parametrize(("impl", "dtype"), COMPILED)
@pytest.mark.parametrize("top_k", [1, 2])
def test_compiled_layer_matches_eager_and_reference(top_k: int, impl: str,
                                                    dtype: torch.dtype) -> None:
    """fullgraph compile (the custom autograd Functions traced by dynamo): forward, the aux
    losses and the gradients of x and every parameter equal eager's and the naive loop's."""
    layer = make_layer(top_k, impl, n_experts=5).eval()
    x = torch.randn(2, 24, 16, generator=torch.Generator().manual_seed(4), requires_grad=True)
    auto = torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32)
    # bf16: differences up to ~0.6% of the largest entry, eager vs naive loop alike
    rel = 1e-5 if dtype == torch.float32 else 2e-2

    def close(a: torch.Tensor, b: torch.Tensor, name: str) -> None:
        err = (a.float() - b.float()).abs().max().item()
        assert err <= rel * b.float().abs().max().item(), (name, err)
    torch._dynamo.reset()
    try:
        with auto, torch._dynamo.config.patch(capture_scalar_outputs=True):
            got = torch.compile(layer, fullgraph=True)(x)
            eager, want = layer(x), reference_moe_forward(layer, x)
        for other in (eager, want):
            assert torch.equal(got.topk_idx, other.topk_idx)
            close(got.out, other.out, "out")
            torch.testing.assert_close(got.lb_loss, other.lb_loss)
            torch.testing.assert_close(got.z_loss, other.z_loss)
        g = torch.randn(x.shape, generator=torch.Generator().manual_seed(5))
        # one backward per forward (a compiled backward may not retain its graph), through
        # the output and both aux losses
        gc, ge, gw = (torch.autograd.grad((o.out.float() * g).sum() + o.lb_loss + o.z_loss,
                                          wrt_of(layer, x)) for o in (got, eager, want))
        for other in (ge, gw):
            for name, a, b in zip(WRT, gc, other, strict=True):
                assert a.abs().sum() > 0, name
                close(a, b, name)
    finally:
        torch._dynamo.reset()


@pytest.mark.parametrize("top_k", [1, 2])
def test_layer_gradients_deterministic_in_training_mode(top_k: int) -> None:
    """Train mode (noise, load counts): two identical steps give bit-identical gradients."""
    outs = []
    for _ in range(2):
        layer = make_layer(top_k, n_experts=4).train()
        x = torch.randn(2, 9, 16, generator=torch.Generator().manual_seed(6), requires_grad=True)
        torch.manual_seed(7)
        o = layer(x)
        outs.append(grads(o.out + o.lb_loss + o.z_loss, wrt_of(layer, x)))
    for a, b in zip(*outs, strict=True):
        assert torch.equal(a, b)


@pytest.mark.skipif(not GMM_ON_CPU, reason="torch._grouped_mm not available on CPU here")
@pytest.mark.parametrize("top_k", [1, 2])
def test_grouped_mm_graphs_have_no_sort_topk_or_accumulating_index_put(top_k: int) -> None:
    """What torch.compile hands inductor for the grouped_mm path (aten graphs after inductor's
    decompositions): no sort, topk, searchsorted or scatter_add in the forward, and no
    accumulating index_put / index_add / scatter_add (atomics on CUDA) in the backward."""
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd
    from torch._inductor.decomposition import select_decomp_table

    graphs: dict[str, list[str]] = {}

    def keep(kind: str):
        def compiler(gm: torch.fx.GraphModule, _inputs: object) -> object:
            graphs[kind] = [f"{n.target}{'+acc' if n.args[3:4] == (True,) else ''}"
                            for n in gm.graph.nodes if n.op == "call_function"]
            return make_boxed_func(gm.forward)
        return compiler

    layer = make_layer(top_k, "grouped_mm", n_experts=5).train()
    x = torch.randn(2, 24, 16, generator=torch.Generator().manual_seed(4), requires_grad=True)
    backend = aot_autograd(fw_compiler=keep("fw"), bw_compiler=keep("bw"),
                           decompositions=select_decomp_table())
    torch._dynamo.reset()
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            o = torch.compile(layer, backend=backend, fullgraph=True)(x)
        (o.out.float().square().sum() + o.lb_loss + o.z_loss).backward()
    finally:
        torch._dynamo.reset()
    fw, bw = " ".join(graphs["fw"]), " ".join(graphs["bw"])
    assert fw.count("_grouped_mm") == 2 and bw.count("_grouped_mm") == 4
    for op in ("sort", "topk", "searchsorted", "scatter_add", "index_add"):
        assert op not in fw, op
    for op in ("index_put.default+acc", "_unsafe_index_put.default+acc", "index_add",
               "scatter_add"):
        assert op not in bw, op
    assert x.grad is not None and layer.c_fc_bias.grad.abs().sum() > 0


# ------------------------------------------------------------------ dispatch building blocks


def test_dispatch_plan_is_a_stable_argsort_by_expert() -> None:
    gen = torch.Generator().manual_seed(0)
    for n_tokens, k, n_experts in [(1, 1, 2), (37, 1, 5), (50, 2, 8), (64, 2, 3)]:
        top_i = torch.randint(0, n_experts, (n_tokens, k), generator=gen)
        top_i[top_i == 1] = 0  # an expert with no token
        plan = dispatch_plan(top_i, n_experts)
        flat = top_i.reshape(-1)
        assert torch.equal(plan.order, torch.argsort(flat, stable=True))
        assert torch.equal(plan.inv[plan.order], torch.arange(flat.numel()))
        assert torch.equal(plan.sorted_e, flat[plan.order])
        assert torch.equal(plan.counts, torch.bincount(flat, minlength=n_experts))
        assert torch.equal(plan.ends, plan.counts.cumsum(0)) and plan.counts[1].item() == 0


def test_route_topk_equals_torch_topk() -> None:
    logits = torch.randn(300, 8, generator=torch.Generator().manual_seed(0))
    logits[:, 3] = float("-inf")  # a removed expert
    for k in (1, 2):
        probs, top_i, gates = route(logits, k)
        want_p, want_i = torch.topk(torch.softmax(logits, -1), k, dim=-1)
        assert torch.equal(top_i, want_i)
        want_g = torch.ones_like(want_p) if k == 1 else want_p / want_p.sum(-1, keepdim=True)
        torch.testing.assert_close(gates, want_g)


def test_gather_rows_and_expert_bias_gradients_match_autograd() -> None:
    """The custom backwards (gather through the inverse, one-hot product) equal autograd's
    own (index_put-accumulate) in float64, for fold 1 and 2."""
    gen = torch.Generator().manual_seed(0)
    for fold in (1, 2):
        src = torch.randn(7, 5, dtype=torch.float64, generator=gen, requires_grad=True)
        index = torch.randperm(7 * fold, generator=gen)
        inverse = torch.empty_like(index).scatter_(0, index, torch.arange(7 * fold))
        out = _GatherRows.apply(src, index, inverse, fold)
        assert torch.equal(out, src[index // fold])
        g = torch.randn(out.shape, dtype=torch.float64, generator=gen)
        torch.testing.assert_close(torch.autograd.grad(out, src, g)[0],
                                   torch.autograd.grad(src[index // fold], src, g)[0])
    h = torch.randn(9, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    bias = torch.randn(3, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    expert = torch.tensor([0, 0, 0, 0, 2, 2, 2, 2, 2])  # expert 1 has no row
    onehot = (expert.unsqueeze(0) == torch.arange(3).unsqueeze(1)).double()
    out = _ExpertBias.apply(h, bias, expert, onehot)
    assert torch.equal(out, h + bias[expert])
    g = torch.randn(out.shape, dtype=torch.float64, generator=gen)
    for a, b in zip(torch.autograd.grad(out, (h, bias), g),
                    torch.autograd.grad(h + bias[expert], (h, bias), g), strict=True):
        torch.testing.assert_close(a, b)


def test_resolve_impl() -> None:
    assert resolve_impl("auto", CPU, torch.float32) == "bmm"
    assert resolve_impl("bmm", CPU, torch.float32) == "bmm"
    with pytest.raises(ValueError, match="not one of"):
        resolve_impl("loop", CPU, torch.float32)
    with pytest.raises(ValueError, match="not one of"):
        MoEFFN(8, 4, 1, impl="scatter")


# ------------------------------------------------------------------ auxiliary losses by hand

LN3 = math.log(3.0)
# 4 tokens, 2 experts: probs rows (.75, .25), (.25, .75), (.75, .25), (.75, .25)
HAND_LOGITS = torch.tensor([[LN3, 0.0], [0.0, LN3], [LN3, 0.0], [LN3, 0.0]])


def hand_layer(top_k: int) -> MoEFFN:
    layer = MoEFFN(2, 2, top_k).eval()  # n_embd 2, router = identity: logits == x
    with torch.no_grad():
        layer.router.weight.copy_(torch.eye(2))
    return layer


@pytest.mark.parametrize(("top_k", "lb_expected"), [
    # top-1 picks experts 0,1,0,0: f = (3/4, 1/4); P = (0.625, 0.375); 2*(.75*.625+.25*.375)
    (1, 1.125),
    # top-2: every token uses both: f = (1/2, 1/2) -> 2 * (0.5 * 0.625 + 0.5 * 0.375)
    (2, 1.0),
])
def test_load_balancing_and_z_loss_hand_computed(top_k: int, lb_expected: float) -> None:
    out = hand_layer(top_k)(HAND_LOGITS.view(1, 4, 2))
    assert out.lb_loss.item() == pytest.approx(lb_expected, abs=1e-6)
    # logsumexp(ln3, 0) = ln 4 for every token
    assert out.z_loss.item() == pytest.approx(math.log(4.0) ** 2, abs=1e-6)
    expected_ids = [[0], [1], [0], [0]] if top_k == 1 else [[0, 1], [1, 0], [0, 1], [0, 1]]
    assert out.topk_idx.view(4, top_k).tolist() == expected_ids


def test_aux_loss_functions_directly() -> None:
    probs = torch.softmax(HAND_LOGITS, dim=-1)
    assert load_balancing_loss(probs, torch.tensor([0.75, 0.25])).item() == pytest.approx(1.125)
    assert load_balancing_loss(probs, torch.tensor([0.5, 0.5])).item() == pytest.approx(1.0)
    z = router_z_loss(torch.tensor([[0.0, 0.0], [math.log(3.0), math.log(5.0)]]))
    assert z.item() == pytest.approx((math.log(2.0) ** 2 + math.log(8.0) ** 2) / 2)


def test_top2_gates_renormalized_and_top1_gate_is_one() -> None:
    x = HAND_LOGITS.view(1, 4, 2)
    for k in (1, 2):
        layer = hand_layer(k)
        with torch.no_grad():  # expert e outputs the constant vector (e+1, e+1)
            layer.c_fc_weight.zero_()
            layer.c_proj_weight.zero_()
            layer.c_fc_bias.zero_()
            layer.c_proj_bias.copy_(torch.tensor([[1.0, 1.0], [2.0, 2.0]]))
        out = layer(x).out.view(4, 2)[:, 0]
        # top-1: exactly the chosen expert's output (gate 1); top-2: .75*e0 + .25*e1 etc.
        want = [1.0, 2.0, 1.0, 1.0] if k == 1 else [1.25, 1.75, 1.25, 1.25]
        assert out.tolist() == pytest.approx(want, abs=1e-6)


# ------------------------------------------------------------------ router gradient, dense mode


def tiny(**kw: object) -> GPTConfig:
    return make_config("tiny", n_layer=2, n_embd=32, n_head=2, block_size=16, **kw)


def test_top1_router_gets_gradient_from_lm_loss_alone() -> None:
    torch.manual_seed(0)
    model = GPT(tiny(n_experts=4, top_k=1, moe_layers=(0, 1)))
    idx = torch.randint(0, 50257, (2, 16), generator=torch.Generator().manual_seed(0))
    model(idx, idx).lm_loss.backward()
    for i in model.moe_layer_ids:
        g = model.moe_layer(i).router.weight.grad
        assert g is not None and g.abs().sum().item() > 0, f"layer {i} router got no gradient"


def test_dense_mode_has_no_router_and_zero_aux_losses() -> None:
    torch.manual_seed(0)
    model = GPT(tiny(n_experts=0))
    assert model.moe_layer_ids == []
    assert not [n for n, _ in model.named_parameters() if "router" in n or "c_fc_weight" in n]
    idx = torch.randint(0, 50257, (2, 8), generator=torch.Generator().manual_seed(0))
    out = model(idx, idx, return_routing=True)
    assert out.lb_loss.item() == 0.0 and out.z_loss.item() == 0.0
    assert out.routing == [] and out.router_probs == []
    assert model(idx).lm_loss is None
    with pytest.raises(ValueError, match="not an MoE layer"):
        model.set_expert_mask(0, [1])


def test_forward_shapes_and_routing_outputs() -> None:
    torch.manual_seed(0)
    model = GPT(tiny(n_experts=4, top_k=2))
    assert model.moe_layer_ids == [1]  # last third of 2 layers
    idx = torch.randint(0, 50257, (3, 8), generator=torch.Generator().manual_seed(0))
    out = model(idx, idx, return_routing=True)
    assert out.logits.shape == (3, 8, 50304)
    assert len(out.routing) == 1 and out.routing[0].shape == (3, 8, 2)
    assert out.routing[0].dtype == torch.int64
    assert out.router_probs[0].shape == (3, 8, 4) and out.router_probs[0].dtype == torch.float32
    p = out.router_probs[0]
    # most probable first
    assert torch.all(p.gather(-1, out.routing[0][..., :1]) >= p.gather(-1, out.routing[0][..., 1:]))
    assert model(idx).routing is None
    assert make_config("gpt2").resolved_moe_layers() == (8, 9, 10, 11)


def test_expert_with_no_tokens_still_gets_zero_gradient() -> None:
    for impl in IMPLS:
        layer = make_layer(1, impl, n_experts=4).eval()
        layer.set_mask([1, 3])  # experts 1 and 3 receive no token
        x = torch.randn(2, 9, 16, generator=torch.Generator().manual_seed(0))
        out = layer(x)
        assert set(out.topk_idx.unique().tolist()) <= {0, 2}
        (out.out.square().sum() + out.lb_loss).backward()
        for p in (layer.c_fc_weight, layer.c_proj_weight, layer.c_fc_bias, layer.c_proj_bias):
            assert p.grad is not None
            assert p.grad[[1, 3]].abs().sum().item() == 0.0, impl
            assert p.grad[[0, 2]].abs().sum().item() > 0.0, impl


# ------------------------------------------------------------------ global-batch load counts


def test_load_counts_accumulate_over_micro_steps_and_reset() -> None:
    layer = make_layer(2, n_experts=4).train()
    layer.set_noise(0.0)
    gen = torch.Generator().manual_seed(5)
    x1, x2 = torch.randn(1, 6, 16, generator=gen), torch.randn(1, 10, 16, generator=gen)
    o1 = layer(x1)
    c1 = torch.bincount(o1.topk_idx.reshape(-1), minlength=4).float()
    assert torch.equal(layer.load_counts, c1) and layer.load_tokens.item() == 6
    torch.testing.assert_close(o1.lb_loss, load_balancing_loss(o1.probs.view(-1, 4), c1 / 12))
    o2 = layer(x2)
    c2 = torch.bincount(o2.topk_idx.reshape(-1), minlength=4).float()
    assert torch.equal(layer.load_counts, c1 + c2) and layer.load_tokens.item() == 16
    # micro-step 2 balances with f over both micro-steps, P from its own tokens
    f12 = (c1 + c2) / (16 * 2)
    torch.testing.assert_close(o2.lb_loss, load_balancing_loss(o2.probs.view(-1, 4), f12))
    own = load_balancing_loss(o2.probs.view(-1, 4), c2 / 20)
    assert abs(o2.lb_loss.item() - own.item()) > 1e-4  # not the per-micro-batch f
    layer.reset_load_counts()
    assert layer.load_counts.sum().item() == 0 and layer.load_tokens.item() == 0
    layer.eval()
    layer(x1)  # eval mode never accumulates
    assert layer.load_counts.sum().item() == 0
    assert "load_counts" not in layer.state_dict()


def test_model_reset_load_counts_and_noise() -> None:
    torch.manual_seed(0)
    model = GPT(tiny(n_experts=4, top_k=1, moe_layers=(0, 1)))
    idx = torch.randint(0, 50257, (2, 16), generator=torch.Generator().manual_seed(0))
    model.train()
    model.set_router_noise(0.0)
    train_out = model(idx)
    assert all(model.moe_layer(i).load_tokens.item() == 32 for i in (0, 1))
    model.reset_load_counts()
    assert all(model.moe_layer(i).load_tokens.item() == 0 for i in (0, 1))
    model.eval()
    torch.testing.assert_close(model(idx).logits, train_out.logits)  # no noise, no dropout
    model.train()
    model.set_router_noise(5.0)
    torch.manual_seed(1)
    noisy = model(idx, return_routing=True).routing
    model.eval()
    clean = model(idx, return_routing=True).routing
    assert any(not torch.equal(a, b) for a, b in zip(noisy, clean, strict=True))
    with pytest.raises(ValueError, match="noise std"):
        model.set_router_noise(-1.0)


def test_set_expert_mask_removes_experts_from_routing() -> None:
    torch.manual_seed(0)
    model = GPT(tiny(n_experts=4, top_k=2)).eval()
    idx = torch.randint(0, 50257, (4, 16), generator=torch.Generator().manual_seed(0))
    before = model(idx, return_routing=True)
    assert {0, 1} & set(before.routing[0].unique().tolist())
    model.set_expert_mask(1, [0, 1])
    masked = model(idx, return_routing=True)
    assert set(masked.routing[0].unique().tolist()) == {2, 3}
    assert masked.router_probs[0][..., :2].abs().max().item() == 0.0
    model.set_expert_mask(1, None)
    torch.testing.assert_close(model(idx).logits, before.logits)
    with pytest.raises(ValueError, match="fewer than top_k=2"):
        model.set_expert_mask(1, [0, 1, 2])
    with pytest.raises(ValueError, match="out of range"):
        model.set_expert_mask(1, [4])
    with pytest.raises(ValueError, match="not an MoE layer"):
        model.set_expert_mask(0, [1])


# ------------------------------------------------------------------ upcycling


def dense_model(**kw: object) -> GPT:
    torch.manual_seed(0)
    model = GPT(tiny(n_experts=0, **kw)).eval()
    with torch.no_grad():  # non-trivial biases and layer norms
        for n, p in model.named_parameters():
            if p.dim() == 1:
                p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(len(n))))
    return model


def check_upcycled(up: GPT, dense: GPT, vocab: int = 50304) -> None:
    dsd = dense.state_dict()
    for i in up.moe_layer_ids:
        m = up.moe_layer(i)
        pre = f"transformer.h.{i}.mlp."
        for stacked, w in [(m.c_fc_weight, dsd[pre + "c_fc.weight"].t()),
                           (m.c_proj_weight, dsd[pre + "c_proj.weight"].t()),
                           (m.c_fc_bias, dsd[pre + "c_fc.bias"]),
                           (m.c_proj_bias, dsd[pre + "c_proj.bias"])]:
            for e in range(m.n_experts):
                diff = (stacked[e] - w).abs().max().item()
                assert 0 < diff <= 6e-3 * w.std().item()  # noise ~1e-3 std: present but small
            assert not torch.equal(stacked[0], stacked[1])  # experts differ (seeded noise)
    usd = up.state_dict()
    for k, v in dsd.items():
        if k in usd and k not in ("transformer.wte.weight", "lm_head.weight"):
            assert torch.equal(usd[k], v), k
    idx = torch.randint(0, 50257, (2, 16), generator=torch.Generator().manual_seed(0))
    a = up.eval()(idx).logits[..., :vocab]
    b = dense(idx).logits[..., :vocab]
    assert (a - b).abs().max().item() < 1e-2 * b.abs().max().item()


@pytest.mark.parametrize("top_k", [1, 2])
def test_upcycle_from_project_checkpoint(tmp_path, top_k: int) -> None:
    dense = dense_model()
    path = tmp_path / "ckpt.pt"
    torch.save({"model": {"_orig_mod." + k: v for k, v in dense.state_dict().items()},
                "model_config": asdict(dense.config), "step": 10}, path)
    cfg = tiny(n_experts=4, top_k=top_k, moe_layers=(0, 1))
    up = upcycle(path, cfg)
    check_upcycled(up, dense)
    assert torch.equal(up.transformer.wte.weight, dense.transformer.wte.weight)
    again = upcycle(path, cfg)  # seeded noise: reproducible
    assert torch.equal(again.moe_layer(0).c_fc_weight, up.moe_layer(0).c_fc_weight)


def test_upcycle_from_hf_safetensors(tmp_path) -> None:
    dense = dense_model()
    conv1d = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
    hf: dict[str, torch.Tensor] = {}
    for k, v in dense.state_dict().items():
        if k == "lm_head.weight":
            continue
        k = k.removeprefix("transformer.")
        hf[k] = (v.t() if k.endswith(conv1d) else v).contiguous()
    hf["wte.weight"] = hf["wte.weight"][:50257].clone()  # HF vocabulary, unpadded
    extra = torch.randn(16, 32, generator=torch.Generator().manual_seed(9))
    hf["wpe.weight"] = torch.cat([hf["wpe.weight"], extra])  # longer context: cropped
    for i in range(2):
        hf[f"h.{i}.attn.bias"] = torch.tril(torch.ones(1, 1, 32, 32))
    (tmp_path / "gpt2").mkdir()
    save_file(hf, str(tmp_path / "gpt2" / "model.safetensors"))
    up = upcycle(tmp_path / "gpt2", tiny(n_experts=4, top_k=1))
    assert up.moe_layer_ids == [1]
    check_upcycled(up, dense, vocab=50257)
    wte = up.transformer.wte.weight
    assert torch.equal(wte[:50257], dense.transformer.wte.weight[:50257])
    torch.testing.assert_close(wte[50300], dense.transformer.wte.weight[:50257].mean(0))
    assert up.lm_head.weight is wte
    # the file itself works too
    up2 = upcycle(tmp_path / "gpt2" / "model.safetensors",
                                    tiny(n_experts=4, top_k=1))
    assert torch.equal(up2.moe_layer(1).c_fc_weight, up.moe_layer(1).c_fc_weight)


def test_upcycle_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        upcycle(tmp_path, tiny())
    torch.manual_seed(0)
    moe = GPT(tiny(n_experts=4))
    torch.save({"model": moe.state_dict(), "model_config": asdict(moe.config)}, tmp_path / "m.pt")
    with pytest.raises(ValueError, match="needs a dense checkpoint"):
        upcycle(tmp_path / "m.pt", tiny())
    dense = dense_model()
    torch.save({"model": dense.state_dict(), "model_config": asdict(dense.config)},
               tmp_path / "d.pt")
    with pytest.raises(ValueError, match="n_embd=32 but the target config has n_embd=64"):
        upcycle(tmp_path / "d.pt", make_config(
            "tiny", n_layer=2, n_embd=64, n_head=2, block_size=16))


# ------------------------------------------------------------------ config, counts, optimizer


def test_preset_param_counts() -> None:
    with torch.device("meta"):
        gpt2_dense = GPT(make_config("gpt2", n_experts=0))
        gpt2_moe = GPT(make_config("gpt2"))
        tiny_dense = GPT(make_config("tiny", n_experts=0))
    assert gpt2_dense.num_params() == 124_475_904  # GPT-2 small, vocab padded to 50304
    expert = 2 * 768 * 3072 + 3072 + 768
    router = 768 * 8
    assert gpt2_moe.num_params() == 124_475_904 + 4 * (7 * expert + router)
    assert gpt2_moe.num_params(active=True) == 124_475_904 + 4 * router
    assert 5_000_000 < tiny_dense.num_params() < 10_000_000
    n = 124_475_904 - 1024 * 768
    assert gpt2_dense.flops_per_token(1024) == 6 * n + 12 * 12 * 12 * 64 * 1024


def test_config_validation_messages() -> None:
    with pytest.raises(ValueError, match="top_k: must be 1 or 2"):
        make_config("tiny", top_k=3)
    with pytest.raises(ValueError, match=r"moe_layers: \[7\] out of range 0..3"):
        make_config("tiny", moe_layers=(7,))
    with pytest.raises(ValueError, match="unknown model preset 'huge'"):
        make_config("huge")
    with pytest.raises(ValueError, match="unknown GPTConfig field"):
        make_config("tiny", n_expert=4)
    with pytest.raises(ValueError, match="n_experts: must be 0"):
        make_config("tiny", n_experts=1)
    assert make_config("tiny", moe_layers=[2, 3]).moe_layers == (2, 3)


def test_configure_optimizer_decays_matrices_only() -> None:
    torch.manual_seed(0)
    model = GPT(tiny(n_experts=4))
    opt = model.configure_optimizer(0.1, 1e-3, (0.9, 0.95), "cpu")
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    m = model.moe_layer(1)
    assert any(p is m.c_fc_weight for p in decay["params"])
    assert any(p is m.router.weight for p in decay["params"])
    assert any(p is m.c_fc_bias for p in no_decay["params"])
    assert all(p.dim() >= 2 for p in decay["params"])
    total = sum(p.numel() for g in opt.param_groups for p in g["params"])
    assert total == model.num_params()


def test_layer_bench_smoke() -> None:
    rows = run_layer_bench(tokens=(64,), top_ks=(1, 2), width=16, n_experts=4, repeats=1,
                           compile_check=False)
    assert [(r["top_k"], r["tokens"]) for r in rows] == [(1, 64), (2, 64)]
    for r in rows:
        assert r["impl"] == "bmm" and r["fullgraph"] is None
        assert r["moe_vs_loop"] == pytest.approx(r["moe_ms"] / r["loop_ms"])
        assert r["moe_vs_dense"] == pytest.approx(r["moe_ms"] / r["dense_ms"])


def test_router_runs_in_float32_under_autocast() -> None:
    torch.manual_seed(0)
    model = GPT(tiny(n_experts=4, top_k=2))
    idx = torch.randint(0, 50257, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(idx, idx, return_routing=True)
        logits = model.moe_layer(1).router_logits(torch.randn(4, 32).bfloat16())
    assert logits.dtype == torch.float32
    assert out.router_probs[0].dtype == torch.float32 and out.lb_loss.dtype == torch.float32
    (out.lm_loss + out.lb_loss + out.z_loss).backward()
    assert model.moe_layer(1).c_fc_weight.grad.dtype == torch.float32
