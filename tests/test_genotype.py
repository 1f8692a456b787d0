"""Genotype files: JSON and DARTS text parsing, defaults, validation messages, safety limits, built-ins."""

from __future__ import annotations

import copy
import json
import time
from collections import namedtuple

import pytest
import torch
from conftest import DARTS_V2_NORMAL, DARTS_V2_REDUCE, DARTS_V2_TEXT, TINY_GENOTYPE

from emonas_edge import create_model, load_genotype
from emonas_edge.config import (
    FER2013_CLASSES,
    MEGC_CLASSES,
    ModelConfig,
    config_from_dict,
    load_genotype_file,
    parse_genotype_text,
)
from emonas_edge.errors import UserError
from emonas_edge.fileio import MAX_JSON_BYTES
from emonas_edge.genotype import CELL_KEYS, Genotype, parse_darts_text
from emonas_edge.nn.ops import known_ops
from emonas_edge.zoo import builtin

DARTS_V1_TEXT = (
    "DARTS_V1 = Genotype(normal=[('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 0), ('sep_conv_3x3', 1), "
    "('skip_connect', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 2)], normal_concat=[2, 3, 4, 5], "
    "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 0), ('max_pool_3x3', 0), "
    "('skip_connect', 2), ('skip_connect', 2), ('avg_pool_3x3', 0)], reduce_concat=[2, 3, 4, 5])\n"
)

# A two-node cell in DARTS text form, with a placeholder for one field's expression.
SMALL_TEXT = (
    "X = Genotype(normal=[('sep_conv_3x3', 0), ('conv_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 0)], "
    "normal_concat={normal_concat}, "
    "reduce=[('max_pool_3x3', 0), ('conv_3x3', 1), ('skip_connect', 2), ('conv_1x1', 1)], "
    "reduce_concat=[2, 3])"
)


def cells_only(d: dict) -> dict:
    return {k: copy.deepcopy(d[k]) for k in CELL_KEYS}


def user_error(d: dict | str, **kw) -> str:
    """The message of the UserError that a genotype dict or text raises."""
    with pytest.raises(UserError) as e:
        if isinstance(d, str):
            parse_genotype_text(d, "test", **kw)
        else:
            config_from_dict(d, "test")
    msg = str(e.value)
    assert msg and "\n" not in msg
    return msg


# --------------------------------------------------------------------------- JSON and defaults


def test_full_json_is_read_field_for_field(tiny_genotype, write_json):
    cfg = load_genotype_file(write_json(tiny_genotype))
    assert cfg.name == "tiny" and cfg.task == "macro" and cfg.family == "cell"
    assert cfg.genotype.normal == (("conv_3x3", 0), ("skip_connect", 1), ("sep_conv_3x3", 1), ("max_pool_3x3", 2))
    assert cfg.genotype.reduce_concat == (2, 3)
    assert cfg.network == tiny_genotype["network"]
    assert cfg.classes == ("negative", "neutral", "positive")
    assert cfg.preprocess.grayscale is True
    assert cfg.preprocess.mean == (0.5,) and cfg.preprocess.std == (0.25,)
    assert cfg.input_shape == (1, 16, 16)
    assert cfg.description == "tiny test genotype"
    # Every field spelled out in the file comes back unchanged.
    assert cfg.to_dict() == tiny_genotype


def test_minimal_json_gets_the_documented_defaults(write_json):
    cfg = load_genotype_file(write_json(cells_only(TINY_GENOTYPE)))
    assert cfg.name == "model"
    assert cfg.task == "macro" and cfg.family == "cell"
    assert cfg.network == {
        "in_channels": 1,
        "input_size": 48,
        "num_classes": 7,
        "drop_path": 0.0,
        "dropout": 0.0,
        "init_channels": 16,
        "layers": 8,
        "auxiliary": False,
        "stem_stride": 1,
        "stem_multiplier": 3,
        "test_time_flip": False,
    }
    assert cfg.classes == FER2013_CLASSES
    assert cfg.preprocess.grayscale is True and cfg.preprocess.mean == (0.5,) and cfg.preprocess.std == (0.5,)
    assert cfg.trained is False and cfg.description == "" and cfg.meta == {}
    assert cfg.input_spec()["shape"] == ["batch", 1, 48, 48]


def test_micro_task_defaults_to_three_megc_classes():
    cfg = config_from_dict({**cells_only(TINY_GENOTYPE), "task": "micro"})
    assert cfg.num_classes == 3 and cfg.classes == MEGC_CLASSES


def test_classes_without_num_classes_set_the_class_count():
    cfg = config_from_dict({**cells_only(TINY_GENOTYPE), "classes": ["a", "b", "c", "d", "e"]})
    assert cfg.num_classes == 5 and cfg.classes == ("a", "b", "c", "d", "e")


def test_unnamed_classes_get_generic_names():
    cfg = config_from_dict({**cells_only(TINY_GENOTYPE), "network": {"num_classes": 4}})
    assert cfg.classes == ("class_0", "class_1", "class_2", "class_3")


def test_rgb_defaults_follow_in_channels():
    cfg = config_from_dict({**cells_only(TINY_GENOTYPE), "network": {"in_channels": 3}})
    assert cfg.preprocess.grayscale is False
    assert cfg.preprocess.mean == (0.5, 0.5, 0.5) and cfg.preprocess.std == (0.5, 0.5, 0.5)
    assert cfg.input_shape == (3, 48, 48)
    assert cfg.input_spec()["color"] == "rgb"


@pytest.mark.parametrize(
    "net, message",
    [
        ({"dims": [16, 32, 64]}, "network 'dims' must be 4 integers from 8 to 2048"),
        ({"dims": [16, 32, 64, "128"]}, "network 'dims' must be 4 integers"),
        ({"depths": [0, 1, 1, 1]}, "network 'depths' must be 4 integers from 1 to 16"),
        ({"heads": [1, 2, 5, True]}, "network 'heads' must be 4 integers from 1 to 64"),
        ({"decoder": 4}, "network 'decoder' must be an integer from 8 to 4096"),
        ({"dims": [32, 64, 161, 256]}, "widths must divide by their head counts; not so for 161/5"),
        ({"decoder": 0}, "network 'decoder' must be an integer from 8 to 4096"),
        ({"fusion": "no"}, "network 'fusion' must be true or false"),
        ({"sr_ratios": [8, 4, 2]}, "network 'sr_ratios' must be 4 integers from 1 to 32"),
    ],
)
def test_bad_mit_settings_are_named(net, message):
    assert message in user_error({"family": "mit", "name": "m", "network": {"variant": "b0", **net}})


def test_mit_family_takes_a_variant_and_no_cells():
    cfg = config_from_dict({"family": "mit", "name": "m", "network": {"variant": "b1", "input_size": 64}})
    assert cfg.genotype is None and cfg.network["variant"] == "b1" and cfg.input_shape == (1, 64, 64)
    # the variant's widths are written out, so a saved config says what it builds
    assert (cfg.network["dims"], cfg.network["depths"], cfg.network["heads"], cfg.network["decoder"]) == (
        [64, 128, 320, 512],
        [2, 2, 2, 2],
        [1, 2, 5, 8],
        256,
    )
    assert config_from_dict(cfg.to_dict()).network == cfg.network
    msg = user_error({**cells_only(TINY_GENOTYPE), "family": "mit"})
    assert "mit" in msg and "normal" in msg


def test_mit_fusion_switch_and_key_value_shrink():
    """The fusion block can be switched off (the paper's ablation: the classifier sees the last stage only),
    and the key/value shrink follows the input: SegFormer's (8, 4, 2, 1) at 224, lowered at 48x48 where an
    8x shrink of the 12x12 first stage would leave attention one key."""
    from emonas_edge.config import auto_sr_ratios, mit_grids
    from emonas_edge.nn.factory import create_model

    small = {"dims": [16, 32, 64, 128], "depths": [1, 1, 1, 1], "heads": [1, 1, 2, 4], "decoder": 32}
    on = config_from_dict({"family": "mit", "name": "m", "network": small})
    off = config_from_dict({"family": "mit", "name": "m", "network": {**small, "fusion": False}})
    assert on.network["fusion"] is True and off.network["fusion"] is False
    assert mit_grids(48) == [12, 6, 3, 2] and mit_grids(224) == [56, 28, 14, 7]
    assert on.network["sr_ratios"] == auto_sr_ratios(48) == [2, 1, 1, 1] and auto_sr_ratios(224) == [8, 4, 2, 1]
    fixed = config_from_dict({"family": "mit", "name": "m", "network": {**small, "sr_ratios": [4, 2, 1, 1]}})
    assert fixed.network["sr_ratios"] == [4, 2, 1, 1] and config_from_dict(fixed.to_dict()) == fixed
    with_fusion, without = create_model(on), create_model(off)
    assert with_fusion.fusion is not None and without.fusion is None
    assert without.classifier.in_features == 128 and with_fusion.classifier.in_features == 32
    x = torch.randn(2, 1, 48, 48)
    assert with_fusion(x).shape == without(x).shape == (2, 7)


def test_test_time_flip_must_be_a_boolean():
    assert "network 'test_time_flip' must be true or false, got 'yes'" in user_error(
        {**cells_only(TINY_GENOTYPE), "network": {"test_time_flip": "yes"}}
    )
    assert "must be true or false, got 1" in user_error(
        {"family": "mit", "name": "m", "network": {"variant": "b0", "test_time_flip": 1}}
    )
    assert config_from_dict({**cells_only(TINY_GENOTYPE), "network": {"test_time_flip": True}}).network[
        "test_time_flip"
    ]


# --------------------------------------------------------------------------- DARTS text form


def test_darts_v2_text_file(darts_v2_file):
    cfg = load_genotype_file(darts_v2_file)
    assert cfg.name == "DARTS_V2"
    assert cfg.genotype.normal == tuple(DARTS_V2_NORMAL)
    assert cfg.genotype.reduce == tuple(DARTS_V2_REDUCE)
    assert cfg.genotype.normal_concat == (2, 3, 4, 5) and cfg.genotype.reduce_concat == (2, 3, 4, 5)
    assert cfg.genotype.steps == 4
    # The text carries only the cells: the network gets the text-genotype defaults.
    assert cfg.input_shape == (1, 48, 48) and cfg.network["init_channels"] == 16 and cfg.network["layers"] == 8
    assert cfg.genotype.op_histogram() == {"sep_conv_3x3": 5, "max_pool_3x3": 5, "skip_connect": 5, "dil_conv_3x3": 1}


def test_range_concat_is_read_like_the_list():
    a = parse_genotype_text(SMALL_TEXT.format(normal_concat="range(2, 4)"), "a")
    b = parse_genotype_text(SMALL_TEXT.format(normal_concat="[2, 3]"), "b")
    c = parse_genotype_text(SMALL_TEXT.format(normal_concat="(2, 3)"), "c")
    assert a.genotype.normal_concat == (2, 3)
    assert a.genotype == b.genotype == c.genotype


def test_range_2_6_in_a_four_node_cell():
    text = DARTS_V2_TEXT.replace("normal_concat=[2, 3, 4, 5]", "normal_concat=range(2, 6)").replace(
        "reduce_concat=[2, 3, 4, 5]", "reduce_concat=range(2, 6)"
    )
    assert "range(2, 6)" in text
    _, g = parse_darts_text(text)
    assert g.normal_concat == (2, 3, 4, 5) and g.reduce_concat == (2, 3, 4, 5)


def test_bare_genotype_call_is_named_after_the_file(tmp_path):
    p = tmp_path / "my genotype!.txt"
    p.write_text(DARTS_V2_TEXT.split("DARTS_V2 = ", 1)[1], encoding="utf-8")
    cfg = load_genotype_file(p)
    assert cfg.name == "my_genotype"
    assert cfg.genotype.normal == tuple(DARTS_V2_NORMAL)


def test_darts_text_round_trip():
    _, g = parse_darts_text(DARTS_V2_TEXT)
    _, again = parse_darts_text(g.to_darts_text())
    assert again == g


def test_several_genotypes_need_select(tmp_path):
    p = tmp_path / "genotypes.py"
    p.write_text(DARTS_V2_TEXT + DARTS_V1_TEXT, encoding="utf-8")
    with pytest.raises(UserError) as e:
        load_genotype_file(p)
    msg = str(e.value)
    assert "--select" in msg and "DARTS_V1" in msg and "DARTS_V2" in msg and "2 genotypes" in msg

    v1 = load_genotype_file(p, select="DARTS_V1")
    v2 = load_genotype_file(p, select="DARTS_V2")
    assert v1.name == "DARTS_V1" and v1.genotype.normal[0] == ("sep_conv_3x3", 1)
    assert v1.genotype.reduce[-1] == ("avg_pool_3x3", 0)
    assert v2.name == "DARTS_V2" and v2.genotype.normal == tuple(DARTS_V2_NORMAL)

    with pytest.raises(UserError) as e:
        load_genotype_file(p, select="PDARTS")
    assert "PDARTS" in str(e.value) and "DARTS_V1" in str(e.value) and "DARTS_V2" in str(e.value)


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("X = Genotype([('sep_conv_3x3', 0)], [2], [('max_pool_3x3', 0)], [2])", "keyword"),
        (SMALL_TEXT.format(normal_concat="[2, 3]")[:-1] + ", weights=[1, 2])", "weights"),
        ("X = Genotype(normal=[('sep_conv_3x3', 0)", "neither"),
        ("print('hello')", "no Genotype"),
        ("", "not a genotype"),
        ("[1, 2, 3]", "not a genotype"),
        (SMALL_TEXT.format(normal_concat="range(2, 200)"), "too long"),
        (SMALL_TEXT.format(normal_concat="range('a')"), "range"),
        (SMALL_TEXT.format(normal_concat="[2, 3.5]"), None),
        (SMALL_TEXT.format(normal_concat="[2, True]"), None),
    ],
    ids=[
        "positional",
        "unknown-field",
        "syntax",
        "no-genotype",
        "empty",
        "json-list",
        "long-range",
        "range-str",
        "float",
        "bool",
    ],
)
def test_bad_darts_text_is_a_user_error(text, fragment):
    msg = user_error(text)
    if fragment:
        assert fragment in msg


# --------------------------------------------------------------------------- never evaluated

MALICIOUS = {
    "import-call": "X = Genotype(normal=__import__('os').system('touch {m}'), normal_concat=[2], "
    "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1)], reduce_concat=[2])",
    "call-in-index": "X = Genotype(normal=[('sep_conv_3x3', __import__('os').system('touch {m}')), "
    "('sep_conv_3x3', 1)], normal_concat=[2], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1)], reduce_concat=[2])",
    "lambda": "X = Genotype(normal=(lambda: __import__('os').system('touch {m}'))(), normal_concat=[2], "
    "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1)], reduce_concat=[2])",
    "attribute": "X = Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1)], "
    "normal_concat=os.system('touch {m}'), reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1)], reduce_concat=[2])",
    "dunder-attribute": "X = Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1)], "
    "normal_concat=().__class__.__base__.__subclasses__(), "
    "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1)], reduce_concat=[2])",
    "range-shadow": "X = Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1)], "
    "normal_concat=range(__import__('os').system('touch {m}'), 3), "
    "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1)], reduce_concat=[2])",
    "fstring": "X = Genotype(normal=[(f\"{{__import__('os').system('touch {m}')}}\", 0), ('sep_conv_3x3', 1)], "
    "normal_concat=[2], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1)], reduce_concat=[2])",
    "splat": "X = Genotype(**__import__('os').system('touch {m}'))",
    "walrus": "X = Genotype(normal=(y := __import__('os').system('touch {m}')), normal_concat=[2], "
    "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1)], reduce_concat=[2])",
}


@pytest.mark.parametrize("kind", sorted(MALICIOUS))
def test_code_in_the_genotype_call_is_rejected_not_run(tmp_path, kind):
    marker = tmp_path / "PWNED"
    p = tmp_path / "evil.py"
    p.write_text(MALICIOUS[kind].format(m=marker), encoding="utf-8")
    with pytest.raises(UserError) as e:
        load_genotype_file(p)
    assert str(e.value)
    assert not marker.exists(), "the genotype text was executed"


def test_the_payload_is_live_under_eval(tmp_path):
    """Control: the same text *does* run code when evaluated, so the test above can fail."""
    marker = tmp_path / "PWNED"
    G = namedtuple("Genotype", "normal normal_concat reduce reduce_concat")
    eval(MALICIOUS["lambda"].split("X = ", 1)[1].format(m=marker), {"Genotype": G})  # noqa: S307
    assert marker.exists()


def test_statements_around_the_genotype_are_never_run(tmp_path):
    marker = tmp_path / "PWNED"
    text = (
        f"import os\nos.system('touch {marker}')\n__import__('os').system('touch {marker}')\n"
        + DARTS_V2_TEXT
        + f"exec(\"open('{marker}', 'w')\")\n"
    )
    p = tmp_path / "genotypes.py"
    p.write_text(text, encoding="utf-8")
    cfg = load_genotype_file(p)
    assert cfg.name == "DARTS_V2" and cfg.genotype.normal == tuple(DARTS_V2_NORMAL)
    assert not marker.exists()


# --------------------------------------------------------------------------- validation messages


def test_unknown_op_lists_the_known_ones(tiny_genotype):
    tiny_genotype["normal"][2] = ["sep_conv_9x9", 1]
    msg = user_error(tiny_genotype)
    assert "'sep_conv_9x9'" in msg and "normal" in msg and "node 1" in msg
    known = known_ops()
    assert len(known) >= 8
    for op in known:
        assert op in msg


def test_unknown_op_in_darts_text():
    msg = user_error(DARTS_V2_TEXT.replace("'dil_conv_3x3'", "'dil_conv_11x11'"))
    assert "dil_conv_11x11" in msg and "sep_conv_3x3" in msg


@pytest.mark.parametrize(
    "kind, position, index, node, allowed",
    [
        ("normal", 0, 2, 0, "0..1"),
        ("normal", 3, 3, 1, "0..2"),
        ("reduce", 1, 5, 0, "0..1"),
        ("normal", 0, -1, 0, "0..1"),
    ],
)
def test_input_index_out_of_range_names_the_node(tiny_genotype, kind, position, index, node, allowed):
    tiny_genotype[kind][position][1] = index
    msg = user_error(tiny_genotype)
    assert f"'{kind}' node {node} reads input {index}" in msg and allowed in msg


def test_last_node_may_read_every_earlier_state(tiny_genotype):
    tiny_genotype["normal"][3] = ["conv_3x3", 2]  # node 1 reads node 0's output (state 2): allowed
    assert config_from_dict(tiny_genotype).genotype.normal[3] == ("conv_3x3", 2)


@pytest.mark.parametrize("kind", ["normal", "reduce"])
def test_odd_number_of_ops(tiny_genotype, kind):
    tiny_genotype[kind] = tiny_genotype[kind][:3]
    msg = user_error(tiny_genotype)
    assert f"'{kind}' has 3 operations" in msg and "even" in msg


@pytest.mark.parametrize(
    "concat, fragment",
    [
        ([2, 4], "invalid"),
        ([2, 2], "distinct"),
        ([-1, 2], "invalid"),
        ([], "non-empty"),
        ([2, "3"], "integers"),
        ("2,3", "non-empty"),
        ([2, True], "integers"),
    ],
    ids=["out-of-range", "duplicate", "negative", "empty", "string", "not-a-list", "bool"],
)
def test_concat_must_be_distinct_valid_states(tiny_genotype, concat, fragment):
    tiny_genotype["normal_concat"] = concat
    msg = user_error(tiny_genotype)
    assert fragment in msg and "normal_concat" in msg
    if fragment in ("invalid", "distinct"):
        assert "0..3" in msg  # two nodes -> states 0..3


@pytest.mark.parametrize(
    "edges",
    [
        [["conv_3x3"], ["conv_3x3", 0]],
        [["conv_3x3", "0"], ["conv_3x3", 1]],
        [["conv_3x3", True], ["conv_3x3", 1]],
        [[3, 0], ["conv_3x3", 1]],
        "conv_3x3",
        [],
    ],
    ids=["short-pair", "string-index", "bool-index", "int-op", "string", "empty"],
)
def test_malformed_edges(tiny_genotype, edges):
    tiny_genotype["reduce"] = edges
    assert "reduce" in user_error(tiny_genotype)


def test_missing_cell_keys(tiny_genotype):
    del tiny_genotype["reduce_concat"]
    assert "reduce_concat" in user_error(tiny_genotype)


def test_unsupported_cell_input_size_says_which_sizes_work(tiny_genotype):
    tiny_genotype["network"]["input_size"] = 50
    msg = user_error(tiny_genotype)
    assert "input_size 50" in msg and "multiple of 4" in msg and "at least 16" in msg and "48" in msg
    # The sizes the message suggests really are accepted, and the network runs at them.
    for size in (48, 64):
        tiny_genotype["network"]["input_size"] = size
        cfg = config_from_dict(tiny_genotype)
        with torch.no_grad():
            out = create_model(cfg).eval()(torch.zeros(1, *cfg.input_shape))
        assert out.shape == (1, 3)


def test_unsupported_size_with_stride_2_stem(tiny_genotype):
    tiny_genotype["network"].update(stem_stride=2, input_size=36)
    msg = user_error(tiny_genotype)
    assert "multiple of 8" in msg and "at least 32" in msg and "48" in msg and "112" in msg


def test_every_accepted_size_actually_runs(tiny_genotype):
    """Validation must not accept a size the cell network then fails on."""
    accepted = []
    for size in range(8, 61, 2):
        tiny_genotype["network"]["input_size"] = size
        try:
            cfg = config_from_dict(tiny_genotype)
        except UserError:
            continue
        accepted.append(size)
        with torch.no_grad():
            out = create_model(cfg).eval()(torch.zeros(1, 1, size, size))
        assert out.shape == (1, 3), size
    assert accepted == [16, 20, 24, 28, 32, 36, 40, 44, 48, 52, 56, 60]


def test_unsupported_mit_input_size():
    msg = user_error({"family": "mit", "network": {"input_size": 16}})
    assert "input_size 16" in msg and "MiT" in msg and "at least 32" in msg
    assert config_from_dict({"family": "mit", "network": {"input_size": 32}}).input_size == 32


@pytest.mark.parametrize("size", [4, 2000, "48", 48.0, True])
def test_input_size_out_of_the_accepted_range(tiny_genotype, size):
    tiny_genotype["network"]["input_size"] = size
    assert "input_size" in user_error(tiny_genotype)


def test_class_count_must_match_num_classes(tiny_genotype):
    tiny_genotype["network"]["num_classes"] = 4
    msg = user_error(tiny_genotype)
    assert "3 class names" in msg and "num_classes is 4" in msg


def test_duplicate_or_empty_class_names(tiny_genotype):
    tiny_genotype["classes"] = ["a", "a", "b"]
    assert "duplicates" in user_error(tiny_genotype)
    tiny_genotype["classes"] = ["a", "", "b"]
    assert "classes" in user_error(tiny_genotype)


@pytest.mark.parametrize("in_channels, grayscale", [(3, True), (1, False)])
def test_grayscale_must_agree_with_in_channels(tiny_genotype, in_channels, grayscale):
    tiny_genotype["network"]["in_channels"] = in_channels
    tiny_genotype["preprocess"] = {"grayscale": grayscale}
    msg = user_error(tiny_genotype)
    assert "contradicts" in msg and f"in_channels={in_channels}" in msg


def test_mean_std_length_follows_in_channels(tiny_genotype):
    tiny_genotype["preprocess"] = {"grayscale": True, "mean": [0.5, 0.5, 0.5], "std": [0.5]}
    assert "mean" in user_error(tiny_genotype)
    tiny_genotype["preprocess"] = {"grayscale": True, "mean": [0.5], "std": [0.0]}
    assert "positive" in user_error(tiny_genotype)


def test_unknown_top_level_key(tiny_genotype):
    tiny_genotype["colour"] = "gray"
    msg = user_error(tiny_genotype)
    assert "'colour'" in msg and "unknown key" in msg
    for key in ("network", "classes", "preprocess"):
        assert key in msg  # it lists what is allowed


def test_unknown_network_key(tiny_genotype):
    tiny_genotype["network"]["variant"] = "b0"  # a MiT setting in a cell network
    msg = user_error(tiny_genotype)
    assert "'variant'" in msg and "cell" in msg


@pytest.mark.parametrize(
    "key, value",
    [
        ("format", "emonas-genotype/2"),
        ("task", "nano"),
        ("family", "vit"),
        ("trained", "yes"),
        ("meta", []),
        ("description", 3),
        ("network", []),
    ],
)
def test_bad_top_level_values(tiny_genotype, key, value):
    tiny_genotype[key] = value
    assert key in user_error(tiny_genotype)


@pytest.mark.parametrize(
    "name", ["../../x", "a/b", "/etc/passwd", "..", ".hidden", "", "x" * 101, "a\\b", "a b", "x\n", "..x"]
)
def test_unsafe_names_are_refused(tiny_genotype, name):
    tiny_genotype["name"] = name
    msg = user_error(tiny_genotype)
    assert "not allowed" in msg


def test_names_that_are_plain_file_stems_pass(tiny_genotype):
    for name in ("DARTS_V2", "emonas-macro", "a.b-c_1", "x" * 100):
        tiny_genotype["name"] = name
        assert config_from_dict(tiny_genotype).name == name


def test_unsafe_variable_name_in_darts_text_is_refused():
    # A DARTS variable name becomes the model name: it passes the same check.
    with pytest.raises(UserError):
        parse_genotype_text("_" * 120 + " = " + DARTS_V2_TEXT.split("DARTS_V2 = ", 1)[1], "t")


# --------------------------------------------------------------------------- size, depth, encoding limits


def test_json_over_one_megabyte_is_refused(tmp_path, tiny_genotype):
    tiny_genotype["description"] = "x" * (MAX_JSON_BYTES + 10)
    p = tmp_path / "huge.json"
    p.write_text(json.dumps(tiny_genotype), encoding="utf-8")
    with pytest.raises(UserError) as e:
        load_genotype_file(p)
    assert "refusing" in str(e.value) and "bytes" in str(e.value)
    # The text path refuses too.
    assert "refusing" in user_error(json.dumps(tiny_genotype))


def test_json_just_under_the_limit_is_read(tmp_path, tiny_genotype):
    tiny_genotype["description"] = "x" * (MAX_JSON_BYTES - 2000)
    p = tmp_path / "big.json"
    p.write_text(json.dumps(tiny_genotype), encoding="utf-8")
    assert len(load_genotype_file(p).description) == MAX_JSON_BYTES - 2000


@pytest.mark.parametrize("opener, closer", [("[", "]"), ('{"a":', "}")])
def test_deeply_nested_json_is_refused_quickly(tmp_path, opener, closer):
    depth = 10000
    nested = opener * depth + "1" + closer * depth
    p = tmp_path / "deep.json"
    p.write_text('{"meta": {"x": ' + nested + "}}", encoding="utf-8")
    t0 = time.perf_counter()
    with pytest.raises(UserError) as e:
        load_genotype_file(p)
    assert time.perf_counter() - t0 < 1.0
    assert "nested" in str(e.value)


def test_brackets_inside_json_strings_do_not_count_as_depth(tiny_genotype):
    tiny_genotype["description"] = '[{"\\' * 500
    tiny_genotype["meta"] = {"note": "[[[[" * 100, "quote": 'a "quoted" [ word'}
    cfg = parse_genotype_text(json.dumps(tiny_genotype), "t")
    assert cfg.description == '[{"\\' * 500 and cfg.meta["quote"] == 'a "quoted" [ word'


def test_moderate_nesting_in_meta_is_fine(tiny_genotype):
    inner: object = 1
    for _ in range(20):
        inner = {"a": inner}
    tiny_genotype["meta"] = inner
    assert parse_genotype_text(json.dumps(tiny_genotype), "t").meta == inner


def test_non_utf8_file(tmp_path):
    p = tmp_path / "latin1.json"
    p.write_bytes(json.dumps(TINY_GENOTYPE).replace("tiny test genotype", "caf\u00e9").encode("latin-1"))
    with pytest.raises(UserError) as e:
        load_genotype_file(p)
    assert "UTF-8" in str(e.value)


def test_binary_garbage_file(tmp_path):
    p = tmp_path / "garbage.json"
    p.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(UserError):
        load_genotype_file(p)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_genotype_file(tmp_path / "nope.json")
    with pytest.raises(UserError, match="not a regular file"):
        load_genotype_file(tmp_path)


@pytest.mark.parametrize(
    "text",
    ['{"name": "x",', "{}", '{"normal": 1}', "{" + " " * 10 + "]"],
    ids=["truncated", "empty-object", "bad-normal", "mismatched"],
)
def test_bad_json_text(text):
    assert user_error(text)


# --------------------------------------------------------------------------- round trips


def _configs(darts_v2_file) -> list[ModelConfig]:
    return [
        config_from_dict(TINY_GENOTYPE),
        load_genotype_file(darts_v2_file),
        load_genotype("emonas-macro"),
        load_genotype("emonas-micro"),
        config_from_dict(
            {
                "family": "mit",
                "name": "m",
                "task": "micro",
                "network": {"variant": "b2", "in_channels": 3},
                "meta": {"source": {"paper": "x", "n": [1, 2]}},
                "trained": True,
            }
        ),
    ]


def test_to_dict_round_trip(darts_v2_file):
    for cfg in _configs(darts_v2_file):
        d = cfg.to_dict()
        again = config_from_dict(d)
        assert again == cfg
        assert again.to_dict() == d
        # ... also through real JSON text.
        assert parse_genotype_text(json.dumps(d), "rt") == cfg


def test_replace_revalidates(tiny_genotype):
    cfg = config_from_dict(tiny_genotype)
    assert cfg.replace(trained=True).trained is True
    with pytest.raises(UserError):
        cfg.replace(name="../x")


def test_to_dict_does_not_share_mutable_state(tiny_genotype):
    tiny_genotype["meta"] = {"k": [1]}
    cfg = config_from_dict(tiny_genotype)
    d = cfg.to_dict()
    d["meta"]["k"].append(2)
    d["network"]["layers"] = 99
    assert cfg.meta == {"k": [1]} and cfg.network["layers"] == 3


# --------------------------------------------------------------------------- built-in names


def test_builtin_macro():
    cfg = load_genotype("emonas-macro")
    assert cfg.name == "emonas-macro" and cfg.task == "macro" and cfg.family == "cell"
    assert cfg.input_shape == (1, 48, 48)
    assert cfg.classes == FER2013_CLASSES and len(cfg.classes) == 7
    assert cfg.preprocess.grayscale is True


def test_builtin_micro():
    cfg = load_genotype("emonas-micro")
    assert cfg.name == "emonas-micro" and cfg.task == "micro"
    assert cfg.input_shape == (3, 64, 64)
    assert cfg.classes == ("negative", "positive", "surprise")
    assert cfg.trained is False
    assert cfg.preprocess.grayscale is False


def test_builtin_names_resolve_like_their_files():
    for name in ("emonas-macro", "emonas-micro"):
        entry = builtin(name)
        assert entry is not None and entry.genotype.is_file()
        assert load_genotype(name) == load_genotype(entry.genotype)


def test_builtin_with_overrides():
    cfg = load_genotype("emonas-macro", input_size=64, layers=5)
    assert cfg.input_shape == (1, 64, 64) and cfg.network["layers"] == 5
    assert cfg.classes == FER2013_CLASSES
    rgb = load_genotype("emonas-macro", in_channels=3)
    assert rgb.input_shape == (3, 48, 48) and rgb.preprocess.grayscale is False
    with pytest.raises(UserError, match="input_size 50"):
        load_genotype("emonas-macro", input_size=50)


def test_unknown_builtin_name_lists_the_builtins():
    with pytest.raises(UserError) as e:
        load_genotype("emonas-nano")
    assert "emonas-macro" in str(e.value) and "emonas-micro" in str(e.value)


def test_genotype_dataclass_is_hashable_and_immutable():
    g = config_from_dict(TINY_GENOTYPE).genotype
    assert isinstance(g, Genotype)
    assert hash(g) == hash(config_from_dict(copy.deepcopy(TINY_GENOTYPE)).genotype)
    with pytest.raises(AttributeError):
        g.normal = ()  # type: ignore[misc]


# --------------------------------------------------------------------------- hostile DARTS text (bugs found and fixed)

_ONE_OP = "('sep_conv_3x3', 0)"


@pytest.mark.parametrize("operand", ["'x'", "None"])
def test_negated_non_number_is_a_user_error(operand):
    user_error(SMALL_TEXT.format(normal_concat="[2, 3]").replace(_ONE_OP, f"('sep_conv_3x3', -{operand})", 1))


def test_range_with_zero_step_is_a_user_error():
    user_error(SMALL_TEXT.format(normal_concat="range(2, 4, 0)"))


def test_range_with_huge_bound_is_a_user_error():
    user_error(SMALL_TEXT.format(normal_concat="range(2, 99999999999999999999999999999)"))


@pytest.mark.parametrize(
    "expr",
    ["-" * 5000 + "0", "-" * 100000 + "0", "a" + ".b" * 50000, "+".join(["1"] * 100000)],
    ids=["unary-5k", "unary-100k", "attribute-chain", "binop-chain"],
)
def test_deeply_nested_darts_text_is_a_user_error(tmp_path, expr):
    p = tmp_path / "deep.py"
    p.write_text(f"X = Genotype(normal={expr})", encoding="utf-8")
    assert p.stat().st_size < MAX_JSON_BYTES  # within the size limit, so only a depth check can stop it
    with pytest.raises(UserError):
        load_genotype_file(p)


def test_repeated_keyword_is_refused():
    text = SMALL_TEXT.format(normal_concat="[2, 3]").replace(
        "reduce_concat=[2, 3]", "reduce_concat=[2, 3], normal_concat=[3]"
    )
    user_error(text)
