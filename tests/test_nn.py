"""Networks: the operation registry, the DARTS cell network, MiT, and MAC/parameter counting.

Every registered operation is tested (shapes, gradients, ONNX Runtime agreement) by iterating
``OPS``, so an operation added later is covered without touching this file.
"""

from __future__ import annotations

import contextlib
import io
import math
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from emonas_edge.config import config_from_dict
from emonas_edge.errors import UserError
from emonas_edge.macs import macs_onnx, macs_torch
from emonas_edge.nn import count_params, create_model
from emonas_edge.nn.cellnet import AuxiliaryHead, CellNetwork
from emonas_edge.nn.mit import VARIANTS, MiTClassifier
from emonas_edge.nn.ops import OPS, build_op, known_ops

OP_NAMES = list(OPS)
C = 8  # channels used for single-op tests
SIZE = 16  # even spatial size (FactorizedReduce needs one)

# A cell genotype that uses parameterised ops, pooling and both reduce paths of skip_connect.
CELL_GENOTYPE = {
    "normal": [["sep_conv_3x3", 0], ["dil_conv_3x3", 1], ["conv_7x1_1x7", 2], ["skip_connect", 0]],
    "normal_concat": [2, 3],
    "reduce": [["max_pool_3x3", 0], ["conv_3x3", 1], ["skip_connect", 2], ["sep_conv_5x5", 1]],
    "reduce_concat": [2, 3],
}


def cell_config(**network):
    net = {"in_channels": 1, "input_size": 48, "init_channels": 8, "layers": 3}
    net.update(network)
    return config_from_dict({"name": "cellnet", "family": "cell", **CELL_GENOTYPE, "network": net})


def mit_config(**network):
    net = {"in_channels": 1, "input_size": 48, "variant": "b0"}
    net.update(network)
    return config_from_dict({"name": "mit", "family": "mit", "network": net})


def randomize_norm_stats(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm running stats and affine params, so eval-mode BN really computes something."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 1.5 + 0.5)
                if m.affine:
                    m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                    m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.5)
    return model


@contextlib.contextmanager
def quiet():
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def export(model: nn.Module, example: torch.Tensor, path, output_names=None, dynamic_batch=False) -> None:
    dyn = ({0: torch.export.Dim("batch", min=1, max=1024)},) if dynamic_batch else None
    with quiet():
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=True,
            external_data=False,
            opset_version=18,
            input_names=["input"],
            output_names=output_names,
            dynamic_shapes=dyn,
            verbose=False,
        )


def ort_session(path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


# ------------------------------------------------------------------------------ operations


def test_registry_is_consistent():
    assert OP_NAMES == known_ops()
    assert "none" in OPS and "skip_connect" in OPS
    for name, spec in OPS.items():
        assert spec.name == name
        assert spec.description


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("name", OP_NAMES)
def test_op_shape(name, stride, affine):
    torch.manual_seed(0)
    op = build_op(name, C, stride, affine)
    for size in (SIZE, 2 * SIZE + 4, 6):  # even sizes only: FactorizedReduce requires them
        x = torch.randn(3, C, size, size)
        for mode in (op.train, op.eval):
            mode()
            y = op(x)
            expected = math.ceil(size / stride)
            assert y.shape == (3, C, expected, expected), f"{name} stride {stride} size {size}: {tuple(y.shape)}"
            assert y.dtype == x.dtype
            assert torch.isfinite(y).all()


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("name", OP_NAMES)
def test_op_gradients(name, stride):
    torch.manual_seed(1)
    op = build_op(name, C, stride).train()
    x = torch.randn(4, C, SIZE, SIZE, requires_grad=True)
    y = op(x)
    # A random projection: sum(BN(x)) has zero gradient by construction, a projection does not.
    w = torch.randn_like(y)
    (y * w).sum().backward()
    if name == "none":
        assert x.grad is None or torch.count_nonzero(x.grad) == 0
        assert not any(True for _ in op.parameters())
        return
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert torch.count_nonzero(x.grad) > 0, f"{name}: no gradient reaches the input"
    for pname, p in op.named_parameters():
        assert p.grad is not None, f"{name}: parameter {pname} got no gradient"
        assert torch.isfinite(p.grad).all()
        assert torch.count_nonzero(p.grad) > 0, f"{name}: parameter {pname} has an all-zero gradient"


class AllOps(nn.Module):
    """Every registered op side by side, one output per op, so one export covers all of them."""

    def __init__(self, stride: int):
        super().__init__()
        self.names = list(OPS)
        self.ops = nn.ModuleList(build_op(n, C, stride) for n in self.names)

    def forward(self, x):
        return tuple(op(x) for op in self.ops)


@pytest.fixture(scope="module", params=[1, 2], ids=["stride1", "stride2"])
def all_ops_onnx(request, tmp_path_factory):
    stride = request.param
    torch.manual_seed(10 + stride)
    model = randomize_norm_stats(AllOps(stride), seed=stride).eval()
    path = tmp_path_factory.mktemp(f"ops_s{stride}") / "ops.onnx"
    export(model, torch.randn(2, C, SIZE, SIZE), path, output_names=list(model.names))
    return stride, model, path


def test_every_op_matches_onnx_runtime(all_ops_onnx):
    stride, model, path = all_ops_onnx
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    sess = ort_session(path)
    assert [o.name for o in sess.get_outputs()] == model.names
    x = torch.randn(2, C, SIZE, SIZE, generator=torch.Generator().manual_seed(123)) * 2
    outs = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        refs = model(x)
    failures = []
    for name, got, ref in zip(model.names, outs, refs, strict=True):
        ref = ref.numpy()
        if got.shape != ref.shape:
            failures.append(f"{name}: shape {got.shape} vs {ref.shape}")
            continue
        diff = float(np.abs(got - ref).max())
        if not diff < 1e-4:
            failures.append(f"{name}: max abs diff {diff:.3g}")
        if name != "none":
            # Random BN stats make every non-zero op produce sizeable outputs, so the check is meaningful.
            assert float(np.abs(ref).max()) > 0.1, f"{name}: reference output is trivially small"
    assert not failures, f"stride {stride}: ops differ between PyTorch and ONNX Runtime: {failures}"


# --------------------------------------------------------------------------- cell network


@pytest.mark.parametrize("family", ["cell", "mit"])
def test_test_time_flip_averages_the_mirror_in_eval_mode_only(family):
    make = cell_config if family == "cell" else mit_config
    torch.manual_seed(0)
    plain = randomize_norm_stats(create_model(make(num_classes=5)), seed=3)
    flip = create_model(make(num_classes=5, test_time_flip=True))
    flip.load_state_dict(plain.state_dict())  # the option adds no weights
    assert count_params(flip) == count_params(plain)
    x = torch.randn(4, 1, 48, 48) + torch.linspace(-2, 2, 48)  # a left-right ramp: the mirror is another image
    plain.eval(), flip.eval()
    with torch.no_grad():
        p = torch.softmax(plain(x), 1)
        pm = torch.softmax(plain(x.flip(3)), 1)
        out = flip(x)
    assert float((p - pm).abs().max()) > 1e-4, "the mirror view must differ for the test to mean anything"
    torch.testing.assert_close(torch.softmax(out, 1), (p + pm) / 2, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(torch.logsumexp(out, 1), torch.zeros(4), atol=1e-5, rtol=0)  # log-probabilities
    # One image and a batch give the same rows (the two views must not mix across the batch).
    with torch.no_grad():
        torch.testing.assert_close(flip(x[2:3]), out[2:3], atol=1e-5, rtol=1e-4)
    # Training sees each image once, as it is: augmentation already flips.
    flip.train(), plain.train()
    torch.manual_seed(1)
    a = flip(x)
    torch.manual_seed(1)
    b = plain(x)
    torch.testing.assert_close(a, b)


def test_test_time_flip_must_be_a_boolean():
    with pytest.raises(UserError, match="test_time_flip"):
        cell_config(test_time_flip=1)


@pytest.mark.parametrize("aux", [False, True])
def test_cellnet_eval_returns_logits_only(aux):
    torch.manual_seed(0)
    cfg = cell_config(auxiliary=aux, num_classes=5)
    model = create_model(cfg).eval()
    assert isinstance(model, CellNetwork)
    with torch.no_grad():
        out = model(torch.randn(3, 1, 48, 48))
    assert isinstance(out, torch.Tensor)
    assert out.shape == (3, 5)


def test_cellnet_train_without_aux_returns_logits_only():
    model = create_model(cell_config(auxiliary=False)).train()
    out = model(torch.randn(2, 1, 48, 48))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 7)


@pytest.mark.parametrize(
    "size,stem_stride", [(32, 1), (48, 1), (64, 1), (112, 1), (112, 2)], ids=["32", "48", "64", "112", "112-stem2"]
)
def test_cellnet_aux_head_at_any_size(size, stem_stride):
    torch.manual_seed(0)
    cfg = cell_config(auxiliary=True, input_size=size, stem_stride=stem_stride, init_channels=4)
    model = create_model(cfg).train()
    assert isinstance(model.aux_head, AuxiliaryHead)
    out = model(torch.randn(2, 1, size, size))
    assert isinstance(out, tuple) and len(out) == 2
    logits, aux = out
    assert logits.shape == (2, 7) and aux.shape == (2, 7)
    (logits.sum() + aux.sum()).backward()
    assert model.aux_head.classifier.weight.grad is not None
    assert torch.count_nonzero(model.aux_head.classifier.weight.grad) > 0


def test_drop_path_only_in_train_mode():
    torch.manual_seed(0)
    model = create_model(cell_config(drop_path=0.3, init_channels=4, input_size=32))
    x = torch.randn(6, 1, 32, 32)

    model.eval()
    with torch.no_grad():
        model.drop_path_prob = 0.0
        ref_eval = model(x)
        model.drop_path_prob = 0.5
        torch.manual_seed(1)
        dropped_eval = model(x)
    assert torch.equal(ref_eval, dropped_eval), "drop_path changed eval-mode outputs"

    model.train()
    with torch.no_grad():
        model.drop_path_prob = 0.0
        torch.manual_seed(1)
        ref_train = model(x)
        torch.manual_seed(2)
        assert torch.equal(ref_train, model(x)), "train mode without drop_path should be deterministic"
        model.drop_path_prob = 0.5
        torch.manual_seed(1)
        dropped_train = model(x)
    assert not torch.allclose(ref_train, dropped_train), "drop_path had no effect in train mode"


@pytest.mark.parametrize("in_channels", [1, 3])
def test_cellnet_stem_channels(in_channels):
    torch.manual_seed(0)
    cfg = cell_config(in_channels=in_channels, init_channels=4)
    model = create_model(cfg).eval()
    assert model.stem[0].in_channels == in_channels
    with torch.no_grad():
        assert model(torch.randn(2, in_channels, 48, 48)).shape == (2, 7)
        with pytest.raises(RuntimeError):
            model(torch.randn(2, 4 - in_channels, 48, 48))  # 1 <-> 3


def test_stem_stride_2_at_112():
    torch.manual_seed(0)
    cfg = cell_config(input_size=112, stem_stride=2, in_channels=3, init_channels=4)
    model = create_model(cfg).eval()
    seen = {}
    model.stem.register_forward_hook(lambda m, i, o: seen.__setitem__("stem", o.shape))
    model.cells[-1].register_forward_hook(lambda m, i, o: seen.__setitem__("last", o.shape))
    with torch.no_grad():
        out = model(torch.randn(2, 3, 112, 112))
    assert out.shape == (2, 7)
    assert seen["stem"][2:] == (56, 56)
    assert seen["last"][2:] == (14, 14)  # two reduction cells after the strided stem


@pytest.mark.parametrize("reduce_concat", [[0, 2], [1, 2, 3], [0]], ids=["0+2", "1+2+3", "0-only"])
def test_reduction_concat_of_cell_inputs_is_refused(reduce_concat):
    """Found by this suite: such genotypes used to pass validation and crash in forward()."""
    from emonas_edge.errors import UserError

    raw = {
        "family": "cell",
        "normal": [["conv_3x3", 0], ["skip_connect", 1], ["max_pool_3x3", 2], ["conv_1x1", 0]],
        "normal_concat": [2, 3],
        "reduce": [["conv_3x3", 0], ["max_pool_3x3", 1], ["skip_connect", 2], ["avg_pool_3x3", 1]],
        "reduce_concat": reduce_concat,
        "network": {"in_channels": 1, "input_size": 16, "init_channels": 4, "layers": 3},
    }
    with pytest.raises(UserError, match="reduce_concat"):
        config_from_dict(raw)


def test_reduction_cells_placed_at_thirds():
    model = create_model(cell_config(layers=6, init_channels=4))
    assert [c.reduction for c in model.cells] == [False, False, True, False, True, False]


# --------------------------------------------------------------------------------------- MiT


@pytest.mark.parametrize("variant", ["b0", "b1", "b2"])
def test_mit_variants_build(variant):
    model = create_model(mit_config(variant=variant))
    assert isinstance(model, MiTClassifier)
    v = VARIANTS[variant]
    assert [len(s.blocks) for s in model.stages] == list(v["depths"])
    assert model.classifier.in_features == v["decoder"]
    assert model.classifier.out_features == 7


def test_custom_mit_widths_depths_heads_and_decoder():
    cfg = mit_config(**SMALL_MIT)
    assert cfg.network["dims"] == SMALL_MIT["dims"] and cfg.network["variant"] == "b0"
    model = create_model(cfg).eval()
    assert [len(s.blocks) for s in model.stages] == [1, 1, 1, 1]
    assert [s.norm.normalized_shape[0] for s in model.stages] == SMALL_MIT["dims"]
    assert [s.blocks[0].attn.heads for s in model.stages] == SMALL_MIT["heads"]
    assert model.classifier.in_features == 64
    assert count_params(model) < count_params(create_model(mit_config())) / 5
    with torch.no_grad():
        assert model(torch.randn(2, 1, 48, 48)).shape == (2, 7)
    # a partial override keeps the rest of the variant
    half = mit_config(variant="b1", depths=[1, 1, 2, 1])
    assert half.network["dims"] == list(VARIANTS["b1"]["dims"]) and half.network["decoder"] == VARIANTS["b1"]["decoder"]
    assert [len(s.blocks) for s in create_model(half).stages] == [1, 1, 2, 1]


@pytest.mark.parametrize("size", [48, 112])
@pytest.mark.parametrize("in_channels", [1, 3])
def test_mit_b0_forward(size, in_channels):
    torch.manual_seed(0)
    model = create_model(mit_config(input_size=size, in_channels=in_channels, num_classes=4)).eval()
    with torch.no_grad():
        out = model(torch.randn(2, in_channels, size, size))
    assert out.shape == (2, 4)
    assert torch.isfinite(out).all()


def test_mit_train_mode_with_drop_path_backprops():
    torch.manual_seed(0)
    model = create_model(mit_config(drop_path=0.2)).train()
    out = model(torch.randn(2, 1, 48, 48))
    assert out.shape == (2, 7)
    out.square().sum().backward()
    assert model.stages[0].embed.proj.weight.grad is not None


def test_mit_fusion_feeds_classifier():
    torch.manual_seed(0)
    model = create_model(mit_config(input_size=64)).eval()
    randomize_norm_stats(model)
    seen = {}
    model.fusion.register_forward_hook(lambda m, i, o: seen.__setitem__("fusion", o))  # returns None
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        logits = model(x)
        fused = seen["fusion"]
        # The fused map lives on the first stage's grid (stride 4) with the decoder width.
        assert fused.shape == (2, VARIANTS["b0"]["decoder"], 16, 16)
        expected = model.classifier(fused.mean(dim=(2, 3)))
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
    # All four stages reach the fused map: perturbing the deepest stage's projection changes the logits.
    with torch.no_grad():
        model.fusion.proj[3].bias.add_(1.0)
        assert not torch.allclose(model(x), logits)


def test_mit_param_counts_ordered():
    counts = [count_params(create_model(mit_config(variant=v))) for v in ("b0", "b1", "b2")]
    assert counts[0] < counts[1] < counts[2], counts


# ----------------------------------------------------------------------- MACs and parameters


@pytest.fixture(scope="module")
def cell_onnx(tmp_path_factory):
    torch.manual_seed(0)
    cfg = cell_config(init_channels=8)
    model = create_model(cfg).eval()
    path = tmp_path_factory.mktemp("macs_cell") / "cell.onnx"
    export(model, torch.randn(2, *cfg.input_shape), path, dynamic_batch=True)
    return cfg, model, onnx.load(str(path))


# A small custom MiT: every op type of b0 (overlapping patch embeddings, spatial-reduction
# attention at sr 8/4/2/1, Mix-FFN, fusion), at a fraction of b0's export time.
SMALL_MIT = dict(dims=[16, 32, 64, 128], depths=[1, 1, 1, 1], heads=[1, 2, 2, 4], decoder=64)


@pytest.fixture(scope="module")
def mit_onnx(tmp_path_factory):
    torch.manual_seed(0)
    cfg = mit_config(input_size=48, **SMALL_MIT)
    model = create_model(cfg).eval()
    path = tmp_path_factory.mktemp("macs_mit") / "mit.onnx"
    export(model, torch.randn(2, *cfg.input_shape), path, dynamic_batch=True)
    return cfg, model, onnx.load(str(path))


@pytest.mark.slow
def test_macs_cellnet_torch_equals_onnx(cell_onnx):
    cfg, model, proto = cell_onnx
    mt = macs_torch(model, cfg.input_shape)
    mo = macs_onnx(proto)
    assert mt > 1_000_000
    assert mt == mo


@pytest.mark.slow
def test_macs_mit_torch_close_to_onnx(mit_onnx):
    cfg, model, proto = mit_onnx
    mt = macs_torch(model, cfg.input_shape)
    mo = macs_onnx(proto)
    assert mt > 3_000_000
    assert abs(mt - mo) <= 1e-3 * mt, (mt, mo)


@pytest.mark.slow
def test_macs_mit_torch_equals_onnx_exactly(mit_onnx):
    cfg, model, proto = mit_onnx
    assert macs_torch(model, cfg.input_shape) == macs_onnx(proto)


def test_macs_torch_ignores_aux_head_and_restores_mode():
    torch.manual_seed(0)
    plain = create_model(cell_config(auxiliary=False, init_channels=4))
    aux = create_model(cell_config(auxiliary=True, init_channels=4)).train()
    assert macs_torch(aux, (1, 48, 48)) == macs_torch(plain, (1, 48, 48))
    assert aux.training, "macs_torch must restore training mode"


def test_count_params_excludes_aux_head():
    torch.manual_seed(0)
    plain = create_model(cell_config(auxiliary=False, init_channels=4))
    aux = create_model(cell_config(auxiliary=True, init_channels=4))
    aux_params = sum(p.numel() for p in aux.aux_head.parameters())
    assert aux_params > 0
    assert count_params(aux) == count_params(plain)
    assert count_params(aux, include_aux=True) == count_params(plain) + aux_params
    assert count_params(plain) == sum(p.numel() for p in plain.parameters())
