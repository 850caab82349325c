import math

import pytest
import torch
import torch.nn.functional as F

from pointseg.losses import PartialFocalCE, partial_focal_ce


def _batch(seed=0, n=2, c=5, h=6, w=7, frac=0.3):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, h, w, generator=g) * 3
    target = torch.randint(0, c, (n, h, w), generator=g)
    target[torch.rand(n, h, w, generator=g) > frac] = 255
    return logits, target


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gamma_zero_is_cross_entropy_over_labelled_pixels(seed):
    logits, target = _batch(seed)
    assert torch.allclose(partial_focal_ce(logits, target, gamma=0), F.cross_entropy(logits, target, ignore_index=255),
                          atol=1e-6)


def test_gamma_zero_with_class_weights_matches_weighted_cross_entropy():
    logits, target = _batch(3)
    w = torch.tensor([0.5, 2.0, 1.0, 3.0, 0.1])
    assert torch.allclose(partial_focal_ce(logits, target, gamma=0, weight=w),
                          F.cross_entropy(logits, target, weight=w, ignore_index=255), atol=1e-6)


def test_hand_computed_focal_value():
    # one labelled pixel with p_t = 0.5 (two classes, equal logits), one ignored
    logits = torch.zeros(1, 2, 1, 2)
    target = torch.tensor([[[1, 255]]])
    expected = (1 - 0.5) ** 2 * math.log(2)
    assert partial_focal_ce(logits, target, gamma=2).item() == pytest.approx(expected, rel=1e-6)


def test_mean_over_labelled_pixels_only():
    # two labelled pixels with different losses; the unlabelled pixel must not dilute the mean
    logits = torch.tensor([[[[2.0, 0.0, 5.0]], [[0.0, 0.0, -5.0]]]])  # 1×2×1×3
    target = torch.tensor([[[0, 1, 255]]])
    l0 = -math.log(math.exp(2) / (math.exp(2) + 1))
    l1 = math.log(2)
    assert partial_focal_ce(logits, target, gamma=0).item() == pytest.approx((l0 + l1) / 2, rel=1e-6)


def test_focal_down_weights_easy_pixels():
    logits, target = _batch(4)
    ce = partial_focal_ce(logits, target, gamma=0)
    assert partial_focal_ce(logits, target, gamma=1) < ce
    assert partial_focal_ce(logits, target, gamma=2) < partial_focal_ce(logits, target, gamma=1)


def test_no_labelled_pixel_gives_zero_with_a_graph():
    logits = torch.randn(2, 5, 4, 4, requires_grad=True)
    target = torch.full((2, 4, 4), 255)
    loss = partial_focal_ce(logits, target)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(logits.grad).all() and (logits.grad == 0).all()


def test_gradient_flows_only_through_labelled_pixels():
    logits, target = _batch(5)
    logits.requires_grad_(True)
    partial_focal_ce(logits, target, gamma=2).backward()
    unlabelled = (target == 255).unsqueeze(1).expand_as(logits)
    assert (logits.grad[unlabelled] == 0).all()
    assert logits.grad[~unlabelled].abs().sum() > 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_logits(dtype):
    logits, target = _batch(6)
    ref = partial_focal_ce(logits.to(dtype).float(), target, gamma=2)
    out = partial_focal_ce(logits.to(dtype), target, gamma=2)
    assert out.dtype == torch.float32 and torch.isfinite(out)
    assert out.item() == pytest.approx(ref.item(), rel=1e-5)


def test_stable_for_huge_logits():
    logits = torch.tensor([[[[1e4]], [[-1e4]]]])
    assert torch.isfinite(partial_focal_ce(logits, torch.tensor([[[1]]]), gamma=2))
    assert partial_focal_ce(logits, torch.tensor([[[0]]]), gamma=2).item() == 0.0


def test_input_errors_name_the_problem():
    logits, target = _batch(7)
    with pytest.raises(ValueError, match="N×H×W"):
        partial_focal_ce(logits, target[:, :3])
    with pytest.raises(ValueError, match="int64"):
        partial_focal_ce(logits, target.int())
    for frac in (0.3, 0.95):  # sparse and dense paths
        logits, target = _batch(7, frac=frac)
        for gamma in (0.0, 2.0):
            for value in (9, -3):
                bad = target.clone()
                bad[0, 0, 0] = value
                with pytest.raises(ValueError, match="outside"):
                    partial_focal_ce(logits, bad, gamma=gamma)
    with pytest.raises(ValueError, match="gamma"):
        PartialFocalCE(gamma=-1)


def test_module_matches_function_and_moves_weights():
    logits, target = _batch(8)
    w = [1.0, 2.0, 1.0, 1.0, 1.0]
    m = PartialFocalCE(gamma=1.5, weight=w)
    assert torch.equal(m(logits, target), partial_focal_ce(logits, target, 1.5, 255, torch.tensor(w)))
    assert "weight" in dict(m.named_buffers())


@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0, 3.0])
@pytest.mark.parametrize("frac", [0.05, 0.9])  # the sparse (gathered) and the dense (hand-written backward) paths
def test_both_paths_match_the_reference_formula_and_its_gradient(gamma, frac):
    logits, target = _batch(9, frac=frac)
    w = torch.tensor([0.5, 2.0, 1.0, 3.0, 0.1])
    for weight in (None, w):
        a = logits.clone().double().requires_grad_(True)
        out = partial_focal_ce(a, target, gamma=gamma, weight=weight)
        out.backward()
        b = logits.clone().double().requires_grad_(True)
        m = (target != 255).double()
        safe = torch.where(target != 255, target, 0)
        logp_t = F.log_softmax(b, 1).gather(1, safe[:, None])[:, 0]
        mw = m if weight is None else m * weight.double()[safe]
        ref = (-((1 - logp_t.exp()) ** gamma) * logp_t * mw).sum() / mw.sum()
        ref.backward()
        assert out.item() == pytest.approx(ref.item(), rel=1e-5)
        assert torch.allclose(a.grad, b.grad, atol=1e-6)


@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0])
def test_dense_path_is_finite_where_the_prediction_is_certain(gamma):
    # γ < 1: (1-p)^(γ-1) is infinite at p = 1; the gradient there must be 0, not NaN
    logits = torch.tensor([50.0, -50.0]).view(1, 2, 1, 1).repeat(1, 1, 4, 4).requires_grad_()
    loss = partial_focal_ce(logits, torch.zeros(1, 4, 4, dtype=torch.long), gamma=gamma)
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(logits.grad, torch.zeros_like(logits))


@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_compiled_dense_path_matches_the_float64_reference(gamma):
    import pointseg.losses as L

    g = torch.Generator().manual_seed(4)
    logits = torch.randn(1, 5, 256, 256, generator=g) * 3
    target = torch.randint(0, 5, (1, 256, 256), generator=g)
    target[torch.rand(1, 256, 256, generator=g) > 0.9] = 255
    logits[0, :, :4, :4] = torch.tensor([60.0, -60, -60, -60, -60]).view(5, 1, 1)  # certain pixels (γ < 1 edge)
    target[0, :4, :4] = 0
    assert L._use_fused(logits, None) and not L._use_fused(logits, None, compiled=False)
    a = logits.clone().requires_grad_(True)
    out = L.partial_focal_ce(a, target, gamma=gamma, compiled=True)
    out.backward()
    assert {"forward", "backward"} <= set(L._COMPILED) and not L._COMPILED.get("failed")
    b = logits.clone().double().requires_grad_(True)
    m = (target != 255).double()
    logp_t = F.log_softmax(b, 1).gather(1, torch.where(target != 255, target, 0)[:, None])[:, 0]
    ref = (-((1 - logp_t.exp()) ** gamma) * logp_t * m).sum() / m.sum()
    ref.backward()
    assert out.item() == pytest.approx(ref.item(), rel=1e-5)
    # autograd's own float64 gradient of (1-p)^0.5 is NaN at p = 1; the loss's gradient there is 0
    ok = torch.isfinite(b.grad)
    assert torch.isfinite(a.grad).all() and (a.grad[~ok] == 0).all()
    assert torch.allclose(a.grad.double()[ok], b.grad[ok], atol=1e-7)


def test_a_failing_compiler_falls_back_to_the_hand_written_path_and_says_so(monkeypatch, caplog):
    import pointseg.losses as L

    def broken(*a, **k):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(L, "_COMPILED", {"forward": broken, "backward": broken})
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(1, 5, 256, 256, generator=g)
    target = torch.randint(0, 5, (1, 256, 256), generator=g)
    with caplog.at_level("WARNING", logger="pointseg"):
        out = L.partial_focal_ce(logits, target, gamma=2.0, compiled=True)
        again = L.partial_focal_ce(logits, target, gamma=2.0, compiled=True)
    assert L._COMPILED["failed"] and caplog.text.count("torch.compile of the focal loss failed") == 1
    monkeypatch.setenv("POINTSEG_COMPILE_LOSS", "0")
    assert out.item() == again.item() == pytest.approx(L.partial_focal_ce(logits, target, gamma=2.0,
                                                                          compiled=True).item())


def test_compiled_dense_path_refuses_a_class_id_out_of_range():
    import pointseg.losses as L

    logits = torch.randn(1, 5, 256, 256)
    target = torch.randint(0, 5, (1, 256, 256))
    target[0, 7, 9] = 7
    assert L._use_fused(logits, None)
    with pytest.raises(ValueError, match="outside"):
        L.partial_focal_ce(logits, target, gamma=2.0, compiled=True)
    # an ignore_index that is a class id cannot be told apart by the compiled select: the hand-written path runs
    assert not L._use_fused(logits, None, ignore_index=0)


def test_a_compiler_failing_in_backward_only_gives_the_same_gradient(monkeypatch, caplog):
    import pointseg.losses as L

    g = torch.Generator().manual_seed(6)
    logits = torch.randn(1, 5, 256, 256, generator=g)
    target = torch.randint(0, 5, (1, 256, 256), generator=g)
    target[torch.rand(1, 256, 256, generator=g) > 0.7] = 255
    a = logits.clone().requires_grad_(True)
    L.partial_focal_ce(a, target, gamma=2.0, compiled=True).backward()

    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(L, "_COMPILED", {"forward": L._COMPILED["forward"], "backward": broken})
    b = logits.clone().requires_grad_(True)
    with caplog.at_level("WARNING", logger="pointseg"):
        L.partial_focal_ce(b, target, gamma=2.0, compiled=True).backward()
    assert L._COMPILED["failed"] and "torch.compile of the focal loss failed" in caplog.text
    assert torch.allclose(a.grad, b.grad, atol=1e-9)
