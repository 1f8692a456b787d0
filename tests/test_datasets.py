"""Labelled datasets: class folders, the FER2013 CSV, the decode cache, micro-expression clips, LOSO folds.

Everything is built in ``tmp_path`` from synthetic images, except the FER2013 subset test, which
reads 20 images per class from ``../shared`` (skipped when that folder is absent).
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from emonas_edge.config import FER2013_CLASSES, MEGC_CLASSES, config_from_dict
from emonas_edge.data import datasets as datasets_mod
from emonas_edge.data.datasets import ArrayDataset, load_dataset, load_fer2013_csv, load_image_folder
from emonas_edge.data.dynamic_image import dynamic_image
from emonas_edge.data.micro import load_micro_dataset, loso_folds, read_annotations
from emonas_edge.data.preprocess import Preprocessor, read_image
from emonas_edge.errors import UserError

TINY = {
    "name": "tiny",
    "task": "macro",
    "family": "cell",
    "normal": [["conv_3x3", 0], ["skip_connect", 1]],
    "normal_concat": [2],
    "reduce": [["max_pool_3x3", 0], ["conv_3x3", 1]],
    "reduce_concat": [2],
    "network": {"in_channels": 1, "input_size": 48, "init_channels": 8, "layers": 3, "stem_stride": 2},
}


def make_config(in_channels: int = 1, input_size: int = 48, **top):
    d = dict(TINY)
    d["network"] = {**TINY["network"], "in_channels": in_channels, "input_size": input_size}
    d.update(top)
    return config_from_dict(d)


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch) -> Path:
    """Every test gets its own decode cache: exercised, never written to ~/.cache."""
    d = tmp_path / "cache"
    monkeypatch.setenv("EMONAS_EDGE_CACHE", str(d))
    return d


def write_image(path: Path, img: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img), path
    return path


def const_image(value: int, size: int = 48) -> np.ndarray:
    return np.full((size, size), value, np.uint8)


def textured(seed: int, size: int = 48, channels: int | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (size, size) if channels is None else (size, size, channels)
    return rng.integers(0, 256, shape, dtype=np.uint8)


# ---------------------------------------------------------------------------------------------
# Class folders
# ---------------------------------------------------------------------------------------------


def test_class_order_comes_from_the_model_not_from_folder_sort_order(tmp_path):
    # Only three of the seven FER2013 classes, created in non-alphabetical order; every class's
    # images carry a distinct constant so a label can be checked against its pixels.
    value = {"surprise": 200, "angry": 10, "happy": 100}
    root = tmp_path / "data"
    for cls in ("surprise", "angry", "happy"):
        for k in range(3):
            write_image(root / cls / f"{k}.png", const_image(value[cls]))
    ds = load_image_folder(root, make_config())
    assert isinstance(ds, ArrayDataset)
    assert ds.classes == FER2013_CLASSES
    assert len(ds) == 9 and ds.skipped == 0
    assert ds.labels.dtype == np.int64
    assert sorted(set(ds.labels.tolist())) == [0, 3, 6]  # angry, happy, surprise in the model's order
    for img, label in zip(ds.images, ds.labels, strict=True):
        assert int(img[0, 0]) == value[FER2013_CLASSES[label]]
    assert ds.counts() == {"angry": 3, "disgust": 0, "fear": 0, "happy": 3, "neutral": 0, "sad": 0, "surprise": 3}


def test_custom_class_order_is_not_alphabetical(tmp_path):
    # Model classes [zeta, alpha]: the alphabetically first folder must get label 1, not 0.
    config = make_config(classes=["zeta", "alpha"])
    root = tmp_path / "data"
    write_image(root / "alpha" / "a.png", const_image(50))
    write_image(root / "zeta" / "z.png", const_image(150))
    ds = load_image_folder(root, config)
    by_label = {int(lab): int(img[0, 0]) for img, lab in zip(ds.images, ds.labels, strict=True)}
    assert by_label == {0: 150, 1: 50}


def test_folder_names_match_classes_case_insensitively(tmp_path):
    root = tmp_path / "data"
    write_image(root / "Happy" / "a.png", const_image(1))
    ds = load_image_folder(root, make_config())
    assert ds.labels.tolist() == [FER2013_CLASSES.index("happy")]


def test_folder_that_is_not_a_model_class_is_an_error_naming_it(tmp_path):
    root = tmp_path / "data"
    write_image(root / "happy" / "a.png", const_image(1))
    write_image(root / "contempt" / "a.png", const_image(1))
    with pytest.raises(UserError, match="contempt"):
        load_image_folder(root, make_config())


@pytest.mark.parametrize("content", ["nothing", "only_text"])
def test_empty_class_folder_is_an_error(tmp_path, content):
    root = tmp_path / "data"
    write_image(root / "happy" / "a.png", const_image(1))
    (root / "sad").mkdir()
    if content == "only_text":
        (root / "sad" / "notes.txt").write_text("no images here")
    with pytest.raises(UserError, match="sad"):
        load_image_folder(root, make_config())


def test_missing_or_classless_folder_is_an_error(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_image_folder(tmp_path / "nope", make_config())
    (tmp_path / "flat").mkdir()
    write_image(tmp_path / "flat" / "a.png", const_image(1))
    with pytest.raises(UserError, match="no class folders"):
        load_image_folder(tmp_path / "flat", make_config())


def _hundred_images(root: Path, bad: int) -> None:
    for k in range(100 - bad):
        write_image(root / ("happy" if k % 2 else "sad") / f"{k:03d}.png", textured(k, 16))
    for k in range(bad):
        (root / "happy" / f"bad{k}.jpg").write_bytes(b"\xff\xd8 this is not a jpeg at all " * 4)


def test_one_percent_unreadable_images_are_skipped_and_counted(tmp_path):
    root = tmp_path / "data"
    _hundred_images(root, bad=1)
    ds = load_image_folder(root, make_config())
    assert ds.skipped == 1
    assert len(ds) == 99
    assert ds.images.shape == (99, 48, 48)


def test_an_empty_file_counts_as_unreadable(tmp_path):
    root = tmp_path / "data"
    _hundred_images(root, bad=0)
    (root / "sad" / "zero.jpg").write_bytes(b"")
    ds = load_image_folder(root, make_config())
    assert ds.skipped == 1 and len(ds) == 100


def test_more_than_one_percent_unreadable_is_an_error(tmp_path):
    root = tmp_path / "data"
    _hundred_images(root, bad=2)
    with pytest.raises(UserError, match=r"2 of 100 images are unreadable"):
        load_image_folder(root, make_config())


def test_all_unreadable_is_an_error(tmp_path):
    root = tmp_path / "data"
    (root / "happy").mkdir(parents=True)
    (root / "happy" / "x.jpg").write_bytes(b"garbage")
    with pytest.raises(UserError, match="no readable images"):
        load_image_folder(root, make_config())


def test_colour_images_of_another_size_become_model_size_gray(tmp_path):
    root = tmp_path / "data"
    bgr = np.zeros((100, 80, 3), np.uint8)
    bgr[..., 0] = 255  # pure blue in OpenCV's BGR order
    write_image(root / "happy" / "blue.png", bgr)
    write_image(root / "happy" / "small.png", const_image(77, size=20))
    bgra = np.zeros((64, 64, 4), np.uint8)
    bgra[..., 2] = 255  # pure red, with an alpha channel
    bgra[..., 3] = 255
    write_image(root / "happy" / "red_alpha.png", bgra)
    ds = load_image_folder(root, make_config())
    assert ds.images.dtype == np.uint8
    assert ds.images.shape == (3, 48, 48)
    expected = {
        "blue.png": int(cv2.cvtColor(np.array([[[255, 0, 0]]], np.uint8), cv2.COLOR_BGR2GRAY)[0, 0]),  # 29
        "red_alpha.png": int(cv2.cvtColor(np.array([[[0, 0, 255]]], np.uint8), cv2.COLOR_BGR2GRAY)[0, 0]),  # 76
        "small.png": 77,
    }
    for img, name in zip(ds.images, sorted(expected), strict=True):  # files are read in sorted order
        assert np.all(img == expected[name]), name


def test_gray_images_become_model_size_rgb_in_rgb_order(tmp_path):
    config = make_config(in_channels=3, input_size=32)
    root = tmp_path / "data"
    write_image(root / "happy" / "a_gray.png", const_image(90, size=60))
    bgr = np.zeros((24, 24, 3), np.uint8)
    bgr[..., 0] = 255  # blue
    write_image(root / "happy" / "b_blue.png", bgr)
    ds = load_image_folder(root, config)
    assert ds.images.shape == (2, 32, 32, 3) and ds.images.dtype == np.uint8
    assert np.all(ds.images[0] == 90)
    # RGB layout: blue is the last channel
    assert np.all(ds.images[1][..., 2] == 255) and np.all(ds.images[1][..., :2] == 0)


def test_16_bit_png_is_converted_to_uint8(tmp_path):
    root = tmp_path / "data"
    write_image(root / "happy" / "a16.png", np.full((48, 48), 257 * 100, np.uint16))  # 100/255 of full scale
    write_image(root / "happy" / "b8.png", const_image(100))
    ds = load_image_folder(root, make_config(), cache=False)
    assert ds.images.dtype == np.uint8
    assert int(ds.images.max()) <= 255
    assert abs(int(ds.images[0, 0, 0]) - 100) <= 1


def test_limit_per_class(tmp_path):
    root = tmp_path / "data"
    for k in range(5):
        write_image(root / "happy" / f"{k}.png", const_image(k))
        write_image(root / "sad" / f"{k}.png", const_image(100 + k))
    ds = load_image_folder(root, make_config(), limit_per_class=2)
    assert ds.counts()["happy"] == 2 and ds.counts()["sad"] == 2
    # the first files in name order are the ones kept
    assert sorted(int(i[0, 0]) for i in ds.images) == [0, 1, 100, 101]


# ---------------------------------------------------------------------------------------------
# Decode cache
# ---------------------------------------------------------------------------------------------


def _small_tree(root: Path) -> None:
    for k in range(4):
        write_image(root / "happy" / f"h{k}.png", textured(k, 40))
        write_image(root / "fear" / f"f{k}.png", textured(10 + k, 40))


def _cache_files(cache_dir: Path) -> list[Path]:
    return sorted(cache_dir.glob("*.npz")) if cache_dir.is_dir() else []


def test_cache_hit_returns_identical_arrays_without_decoding(tmp_path, cache_dir, monkeypatch):
    root = tmp_path / "data"
    _small_tree(root)
    config = make_config()
    first = load_image_folder(root, config)
    files = _cache_files(cache_dir)
    assert len(files) == 1, "the first load must write one cache file under $EMONAS_EDGE_CACHE"

    def no_decoding(path):
        raise AssertionError(f"cache hit expected, but {path} was decoded")

    monkeypatch.setattr(datasets_mod, "read_image", no_decoding)
    second = load_image_folder(root, config)
    assert np.array_equal(first.images, second.images) and first.images.dtype == second.images.dtype
    assert np.array_equal(first.labels, second.labels) and second.labels.dtype == np.int64
    assert second.classes == first.classes and second.skipped == first.skipped
    assert _cache_files(cache_dir) == files


def test_cache_keeps_the_skipped_count(tmp_path):
    root = tmp_path / "data"
    _hundred_images(root, bad=1)
    assert load_image_folder(root, make_config()).skipped == 1
    assert load_image_folder(root, make_config()).skipped == 1


def test_changed_file_invalidates_the_cache(tmp_path, cache_dir):
    root = tmp_path / "data"
    _small_tree(root)
    config = make_config()
    before = load_image_folder(root, config)
    target = root / "happy" / "h0.png"
    write_image(target, const_image(123, size=40))  # other content, other size
    st = target.stat()
    os.utime(target, (st.st_atime, st.st_mtime + 10))  # and a later mtime even on coarse clocks
    after = load_image_folder(root, config)
    assert len(_cache_files(cache_dir)) == 2
    idx = FER2013_CLASSES.index("happy")
    changed = after.images[after.labels == idx][0]
    assert np.all(changed == 123)
    assert not np.array_equal(before.images, after.images)
    # the untouched images are the same
    assert np.array_equal(before.images[before.labels != idx], after.images[after.labels != idx])


def test_touching_a_file_changes_the_cache_key(tmp_path, cache_dir):
    root = tmp_path / "data"
    _small_tree(root)
    load_image_folder(root, make_config())
    target = root / "fear" / "f1.png"
    st = target.stat()
    os.utime(target, (st.st_atime, st.st_mtime + 100))
    load_image_folder(root, make_config())
    assert len(_cache_files(cache_dir)) == 2


def test_added_file_and_other_model_size_miss_the_cache(tmp_path, cache_dir):
    root = tmp_path / "data"
    _small_tree(root)
    assert len(load_image_folder(root, make_config())) == 8
    write_image(root / "fear" / "f9.png", textured(99, 40))
    assert len(load_image_folder(root, make_config())) == 9
    small = load_image_folder(root, make_config(input_size=32))
    assert small.images.shape == (9, 32, 32)
    assert len(_cache_files(cache_dir)) == 3


def test_damaged_cache_file_is_rebuilt(tmp_path, cache_dir):
    root = tmp_path / "data"
    _small_tree(root)
    first = load_image_folder(root, make_config())
    (cache_file,) = _cache_files(cache_dir)
    cache_file.write_bytes(b"PK\x03\x04 truncated")
    again = load_image_folder(root, make_config())
    assert np.array_equal(first.images, again.images) and np.array_equal(first.labels, again.labels)


def test_cache_false_writes_nothing(tmp_path, cache_dir):
    root = tmp_path / "data"
    _small_tree(root)
    load_image_folder(root, make_config(), cache=False)
    assert _cache_files(cache_dir) == []


# ---------------------------------------------------------------------------------------------
# FER2013 CSV
# ---------------------------------------------------------------------------------------------


def _pixels(seed: int) -> np.ndarray:
    return textured(seed, 48)


def _row(label, px: np.ndarray | str, usage: str) -> str:
    text = px if isinstance(px, str) else " ".join(str(int(v)) for v in px.ravel())
    return f'{label},"{text}",{usage}'  # quoted like some exports; csv handles both


def write_fer_csv(path: Path, rows: list[str], header: str = "emotion,pixels,Usage") -> Path:
    path.write_text(header + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def fer_csv(tmp_path) -> Path:
    rows = [_row(k, _pixels(k), "Training") for k in range(7)]
    rows += [_row(lab, _pixels(100 + i), "PublicTest") for i, lab in enumerate([6, 0, 3])]
    rows += [_row(lab, _pixels(200 + i), "PrivateTest") for i, lab in enumerate([2, 5])]
    return write_fer_csv(tmp_path / "fer2013.csv", rows)


def test_fer_csv_usage_selection_through_load_dataset(fer_csv):
    config = make_config()
    train = load_dataset(fer_csv, config)
    assert train.labels.tolist() == list(range(7))
    assert train.images.shape == (7, 48, 48) and train.images.dtype == np.uint8
    for k in range(7):
        assert np.array_equal(train.images[k], _pixels(k))
    assert train.classes == FER2013_CLASSES

    public = load_dataset(f"{fer_csv}:PublicTest", config)
    assert public.labels.tolist() == [6, 0, 3]
    assert np.array_equal(public.images[1], _pixels(101))
    assert public.source.endswith(":PublicTest")

    private = load_dataset(f"{fer_csv}:PrivateTest", config)
    assert private.labels.tolist() == [2, 5]
    assert np.array_equal(private.images[0], _pixels(200))

    # the usage argument and its aliases
    assert load_dataset(fer_csv, config, usage="PublicTest").labels.tolist() == [6, 0, 3]
    assert load_fer2013_csv(fer_csv, config, usage="val").labels.tolist() == [6, 0, 3]
    assert load_fer2013_csv(fer_csv, config, usage="test").labels.tolist() == [2, 5]


def test_fer_csv_resized_to_model_size(fer_csv):
    ds = load_fer2013_csv(fer_csv, make_config(input_size=32), "PublicTest")
    assert ds.images.shape == (3, 32, 32)
    rgb = load_fer2013_csv(fer_csv, make_config(in_channels=3), "PublicTest")
    assert rgb.images.shape == (3, 48, 48, 3)
    assert np.array_equal(rgb.images[0][..., 0], _pixels(100))


def test_fer_csv_unknown_usage_is_an_error(fer_csv):
    with pytest.raises(UserError, match="Usage=Validation"):
        load_dataset(f"{fer_csv}:Validation", make_config())


# --- RAF-DB basic in its distributed layout ------------------------------------------------
# label file lines "<split>_<n>.jpg <1-7>" (1 surprise, 2 fear, 3 disgust, 4 happy, 5 sad, 6 angry,
# 7 neutral); Image/aligned/<split>_<n>_aligned.jpg (100x100 RGB).
RAF_ROWS = [
    ("train_00001.jpg", 1),
    ("train_00002.jpg", 4),
    ("test_0001.jpg", 6),
    ("train_00003.jpg", 7),
    ("test_0002.jpg", 3),
    ("train_00004.jpg", 6),
    ("train_00005.jpg", 2),
    ("train_00006.jpg", 5),
    ("train_00007.jpg", 3),
]


def _raf_value(name: str) -> int:
    listed = [n for n, _ in RAF_ROWS]
    return 20 + 20 * listed.index(name) if name in listed else 128


def write_rafdb(root: Path, rows=RAF_ROWS, aligned: bool = True, skip: tuple[str, ...] = ()) -> Path:
    (root / "EmoLabel").mkdir(parents=True)
    (root / "EmoLabel" / "list_patition_label.txt").write_text("".join(f"{n} {lab}\n" for n, lab in rows))
    for name, _ in rows:
        if name in skip:
            continue
        stem = name[:-4]
        path = root / "Image" / ("aligned" if aligned else "original") / (f"{stem}_aligned.jpg" if aligned else name)
        write_image(path, np.full((100, 100, 3), _raf_value(name), np.uint8))
    return root


def test_rafdb_layout_maps_its_labels_to_model_classes(tmp_path):
    root = write_rafdb(tmp_path / "basic")
    config = make_config()
    ds = load_dataset(root, config)  # usage Training -> train_* rows
    names = [c for c in FER2013_CLASSES]
    assert [names[i] for i in ds.labels] == ["surprise", "happy", "neutral", "angry", "fear", "sad", "disgust"]
    assert ds.images.shape == (7, 48, 48)
    # each 100x100 crop was read, turned gray and resized: the flat value survives
    train_names = [n for n, _ in RAF_ROWS if n.startswith("train")]
    assert np.allclose(ds.images.mean((1, 2)), [_raf_value(n) for n in train_names], atol=2)

    for spec, usage in [(f"{root}:test", "Training"), (root, "PublicTest"), (f"{root}:val", "Training")]:
        test = load_dataset(spec, config, usage=usage)
        assert [names[i] for i in test.labels] == ["angry", "disgust"]
        assert test.source.endswith(":test")
    assert datasets_mod.dataset_path_exists(f"{root}:test")


def test_rafdb_original_images_when_no_aligned_folder(tmp_path):
    root = write_rafdb(tmp_path / "basic", aligned=False)
    ds = load_dataset(f"{root}:test", make_config(in_channels=3, input_size=32))
    assert ds.images.shape == (2, 32, 32, 3)


def test_rafdb_limit_per_class_and_missing_images(tmp_path):
    root = write_rafdb(tmp_path / "basic", skip=("train_00003.jpg",))
    # one of 7 listed train images missing is far more than 1%: an error that counts them
    with pytest.raises(UserError, match=r"1 of 7 images are unreadable"):
        load_dataset(root, make_config())
    rows = RAF_ROWS + [(f"train_1{i:04d}.jpg", 4) for i in range(100)]
    root2 = write_rafdb(tmp_path / "many", rows=rows, skip=("train_00003.jpg",))
    ds = load_dataset(root2, make_config())  # 1 of 107 (under 1%): skipped and counted
    assert ds.skipped == 1 and len(ds) == 106
    ds = load_dataset(write_rafdb(tmp_path / "all", rows=rows), make_config(), limit_per_class=2)
    assert len(ds) == 8 and np.bincount(ds.labels, minlength=7)[FER2013_CLASSES.index("happy")] == 2


@pytest.mark.parametrize(
    "line, match",
    [
        ("train_00001.jpg 9", "expected '<name>.jpg <label 1-7>'"),
        ("train_00001.jpg", "expected"),
        ("train_00001.jpg happy", "expected"),
    ],
)
def test_rafdb_malformed_label_file(tmp_path, line, match):
    root = write_rafdb(tmp_path / "basic")
    (root / "EmoLabel" / "list_patition_label.txt").write_text("train_00002.jpg 4\n" + line + "\n")
    with pytest.raises(UserError, match=r"list_patition_label.txt:2: " + match):
        load_dataset(root, make_config())


def test_rafdb_bad_split_and_foreign_classes(tmp_path):
    root = write_rafdb(tmp_path / "basic")
    with pytest.raises(UserError, match="unknown RAF-DB split 'holdout'"):
        load_dataset(f"{root}:holdout", make_config())
    with pytest.raises(UserError, match="RAF-DB labels .* are not classes"):
        load_dataset(root, make_config(classes=["neg", "pos", "surprise"]))
    (root / "Image" / "aligned").rename(root / "Image" / "elsewhere")
    with pytest.raises(UserError, match="RAF-DB images not found"):
        load_dataset(root, make_config())


@pytest.mark.parametrize("header", ["label,pixels,Usage", "emotion,image,Usage", "emotion,pixels"])
def test_fer_csv_wrong_columns_is_an_error(tmp_path, header):
    p = write_fer_csv(tmp_path / "bad.csv", [_row(0, _pixels(0), "Training")], header=header)
    with pytest.raises(UserError, match="expected columns emotion,pixels,Usage"):
        load_fer2013_csv(p, make_config())


def test_fer_csv_with_other_classes_is_an_error(fer_csv):
    with pytest.raises(UserError, match="7 FER2013 classes"):
        load_fer2013_csv(fer_csv, make_config(classes=["neg", "pos"]))


def test_fer_csv_missing_file_is_an_error(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_dataset(tmp_path / "nope.csv", make_config())


def _many_rows(n: int) -> list[str]:
    px = " ".join(["128"] * 2304)
    return [_row(k % 7, px, "Training") for k in range(n)]


@pytest.mark.parametrize(
    "bad",
    [
        _row(3, " ".join(["1"] * 2303), "Training"),  # one pixel short
        _row(3, "1 2 x " + " ".join(["1"] * 2301), "Training"),  # not a number
        _row(9, " ".join(["1"] * 2304), "Training"),  # no such class
        _row("happy", " ".join(["1"] * 2304), "Training"),  # label not an index
    ],
    ids=["short", "non-numeric", "label-9", "label-text"],
)
def test_fer_csv_malformed_row_is_skipped_and_counted(tmp_path, bad):
    p = write_fer_csv(tmp_path / "fer.csv", _many_rows(120) + [bad])
    ds = load_fer2013_csv(p, make_config())
    assert len(ds) == 120 and ds.skipped == 1


def test_fer_csv_out_of_range_pixel_is_skipped(tmp_path):
    bad = _row(3, " ".join(["10"] * 2303 + ["300"]), "Training")
    p = write_fer_csv(tmp_path / "fer.csv", _many_rows(120) + [bad])
    ds = load_fer2013_csv(p, make_config())
    assert len(ds) == 120 and ds.skipped == 1


def test_fer_csv_too_many_malformed_rows_is_an_error(tmp_path):
    short = " ".join(["1"] * 100)
    p = write_fer_csv(tmp_path / "fer.csv", _many_rows(50) + [_row(1, short, "Training")] * 5)
    with pytest.raises(UserError, match="5 of 55"):
        load_fer2013_csv(p, make_config())


# ---------------------------------------------------------------------------------------------
# Real FER2013 subset
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def fer_train(shared) -> Path:
    return shared / "datasets" / "fer2013" / "train"


def test_real_fer2013_subset(fer_train):
    config = make_config()
    ds = load_image_folder(fer_train, config, limit_per_class=20)
    assert len(ds) == 140 and ds.skipped == 0
    assert ds.images.shape == (140, 48, 48) and ds.images.dtype == np.uint8
    assert ds.labels.min() >= 0 and ds.labels.max() <= 6
    assert ds.counts() == {c: 20 for c in FER2013_CLASSES}
    # each label's images are exactly the first 20 files of the folder of that class name
    for idx, cls in enumerate(FER2013_CLASSES):
        files = sorted(f for f in (fer_train / cls).iterdir() if f.suffix.lower() == ".jpg")[:20]
        expected = np.stack([cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) for f in files])
        assert np.array_equal(ds.images[ds.labels == idx], expected), cls


# ---------------------------------------------------------------------------------------------
# Micro-expression clips
# ---------------------------------------------------------------------------------------------

MICRO = make_config(task="micro")  # classes negative, positive, surprise


def write_clip(folder: Path, first: int, count: int, seed: int, size: int = 40, suffix: str = ".png") -> list[Path]:
    """Colour frames with a square that moves over time (so the dynamic image is not flat)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 120, (size, size, 3), dtype=np.uint8)
    paths = []
    for k, n in enumerate(range(first, first + count)):
        f = base.copy()
        x = 2 + 3 * k
        f[10:20, x : x + 8] = (200, 220 - seed % 50, 240)
        paths.append(write_image(folder / f"img{n}{suffix}", f))
    return paths


def expected_dynamic(paths: list[Path], config) -> np.ndarray:
    pre = Preprocessor(config)
    return dynamic_image(np.stack([pre.to_model_pixels(read_image(p)) for p in paths]))


def write_csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text(header + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


CASME2_HEADER = "Subject,Filename,OnsetFrame,ApexFrame,OffsetFrame,Estimated Emotion"
SAMM_HEADER = "Subject,Filename,Onset Frame,Apex Frame,Offset Frame,Estimated Emotion"


def test_casme2_annotations_and_megc_mapping(tmp_path):
    p = write_csv(
        tmp_path / "casme2.csv",
        CASME2_HEADER,
        [
            "1,EP01_1,10,12,15,happiness",
            "1,EP02_2,5,/,9,disgust",
            "2,EP01_1,1,3,6,repression",
            "2,EP03_4,1,2,4,others",
            "11,EP05_1,20,22,25,Surprise",
        ],
    )
    clips, counts = read_annotations(p, "casme2")
    assert counts == {"rows": 5, "unmapped_label": 1, "bad_frames": 0}
    assert [c.label for c in clips] == ["positive", "negative", "negative", "surprise"]
    assert [c.subject for c in clips] == ["sub01", "sub01", "sub02", "sub11"]
    assert [c.clip for c in clips] == ["EP01_1", "EP02_2", "EP01_1", "EP05_1"]
    assert (clips[0].onset, clips[0].apex, clips[0].offset) == (10, 12, 15)
    assert clips[1].apex is None  # CASME II writes "/" for an unknown apex

    raw, raw_counts = read_annotations(p, "casme2", megc=False)
    assert [c.label for c in raw] == ["happiness", "disgust", "repression", "others", "surprise"]
    assert raw_counts["unmapped_label"] == 0


def test_samm_annotations(tmp_path):
    p = write_csv(
        tmp_path / "samm.csv",
        SAMM_HEADER,
        [
            "6,006_1_2,100,110,130,Anger",
            "6,006_1_3,200,205,210,Other",
            "16,016_7_1,5,8,12,Happiness",
            "007,007_3_1,40,45,50,Fear",
        ],
    )
    clips, counts = read_annotations(p, "samm")
    assert counts["unmapped_label"] == 1
    assert [(c.subject, c.clip, c.label) for c in clips] == [
        ("006", "006_1_2", "negative"),
        ("016", "016_7_1", "positive"),
        ("007", "007_3_1", "negative"),
    ]


def test_smic_annotations_without_apex(tmp_path):
    p = write_csv(
        tmp_path / "smic.csv",
        "Subject,Clip,Onset,Offset,Label",
        [
            "s1,s1_po_01,1,12,positive",
            "s2,s2_ne_03,4,9,negative",
            "s3,s3_sur_01,2,7,surprise",
        ],
    )
    clips, _ = read_annotations(p, "smic")
    assert [(c.subject, c.clip, c.apex, c.label) for c in clips] == [
        ("s1", "s1_po_01", None, "positive"),
        ("s2", "s2_ne_03", None, "negative"),
        ("s3", "s3_sur_01", None, "surprise"),
    ]


def test_generic_annotations_and_bad_frame_numbers(tmp_path):
    p = write_csv(
        tmp_path / "gen.csv",
        "subject,clip,onset,apex,offset,label",
        [
            "a,c1,1,2,3,happiness",
            "a,c2,one,2,3,happiness",
            "",
            "b,c3,4.0,5,6.0,fear",
        ],
    )
    clips, counts = read_annotations(p, "generic")
    assert counts == {"rows": 3, "unmapped_label": 0, "bad_frames": 1}
    assert [(c.subject, c.clip, c.onset, c.offset, c.label) for c in clips] == [
        ("a", "c1", 1, 3, "positive"),
        ("b", "c3", 4, 6, "negative"),
    ]


def test_onset_after_offset_is_an_error_with_the_line(tmp_path):
    p = write_csv(
        tmp_path / "casme2.csv",
        CASME2_HEADER,
        [
            "1,EP01_1,10,12,15,happiness",
            "1,EP09_9,30,25,20,disgust",
        ],
    )
    with pytest.raises(UserError, match=r"casme2\.csv:3: onset 30 is after offset 20") as e:
        read_annotations(p, "casme2")
    assert "EP09_9" in str(e.value)


def test_annotation_errors(tmp_path):
    p = write_csv(tmp_path / "x.csv", "Subject,Filename,Emotion", ["1,EP01,happiness"])
    with pytest.raises(UserError, match="onset"):
        read_annotations(p, "casme2")
    with pytest.raises(UserError, match="unknown annotation convention"):
        read_annotations(p, "casme3")
    with pytest.raises(UserError, match="not found"):
        read_annotations(tmp_path / "none.csv", "casme2")
    only_others = write_csv(tmp_path / "o.csv", CASME2_HEADER, ["1,EP01_1,1,2,3,others"])
    with pytest.raises(UserError, match="no usable clips"):
        read_annotations(only_others, "casme2")


def test_casme2_dynamic_images_equal_dynamic_image_of_preprocessed_frames(tmp_path):
    root = tmp_path / "CASME2"
    a = write_clip(root / "sub01" / "EP01_1", 1, 8, seed=1)
    b = write_clip(root / "sub01" / "EP02_2", 50, 6, seed=2)
    c = write_clip(root / "sub02" / "EP01_1", 1, 7, seed=3)
    ann = write_csv(
        tmp_path / "casme2.csv",
        CASME2_HEADER,
        [
            "1,EP01_1,2,4,6,happiness",  # frames 2..6 of a clip holding 1..8
            "1,EP02_2,50,52,55,disgust",
            "2,EP01_1,1,3,7,surprise",
            "2,EP01_1,1,3,7,others",  # dropped before any frame is looked at
        ],
    )
    ds, subjects = load_micro_dataset(root, ann, MICRO, convention="casme2")
    assert ds.classes == MEGC_CLASSES
    assert subjects == ["sub01", "sub01", "sub02"]
    assert ds.labels.tolist() == [1, 0, 2]
    assert ds.images.shape == (3, 48, 48) and ds.images.dtype == np.uint8
    assert ds.skipped == 0
    assert np.array_equal(ds.images[0], expected_dynamic(a[1:6], MICRO))
    assert np.array_equal(ds.images[1], expected_dynamic(b, MICRO))
    assert np.array_equal(ds.images[2], expected_dynamic(c, MICRO))
    assert ds.images[0].std() > 0  # motion, not a flat still-clip image


def test_samm_and_smic_folders(tmp_path):
    root = tmp_path / "SAMM"
    f = write_clip(root / "006" / "006_1_2", 100, 5, seed=4, suffix=".jpg")
    ann = write_csv(tmp_path / "samm.csv", SAMM_HEADER, ["6,006_1_2,100,102,104,Contempt"])
    ds, subjects = load_micro_dataset(root, ann, MICRO, convention="samm")
    assert subjects == ["006"] and ds.labels.tolist() == [0]
    assert np.array_equal(ds.images[0], expected_dynamic(f, MICRO))

    smic_root = tmp_path / "SMIC"
    g = write_clip(smic_root / "s3" / "s3_sur_01", 1, 4, seed=5)
    smic = write_csv(tmp_path / "smic.csv", "Subject,Clip,Onset,Offset,Label", ["s3,s3_sur_01,1,4,surprise"])
    ds, subjects = load_micro_dataset(smic_root, smic, MICRO, convention="smic")
    assert subjects == ["s3"] and ds.labels.tolist() == [2]
    assert np.array_equal(ds.images[0], expected_dynamic(g, MICRO))


def test_rgb_model_dynamic_images(tmp_path):
    config = make_config(in_channels=3, input_size=32, task="micro")
    root = tmp_path / "d"
    f = write_clip(root / "a" / "c1", 1, 5, seed=6)
    ann = write_csv(tmp_path / "g.csv", "subject,clip,onset,apex,offset,label", ["a,c1,1,3,5,positive"])
    ds, _ = load_micro_dataset(root, ann, config)
    assert ds.images.shape == (1, 32, 32, 3)
    assert np.array_equal(ds.images[0], expected_dynamic(f, config))


def test_apex_window_and_max_frames(tmp_path):
    root = tmp_path / "d"
    f = write_clip(root / "a" / "c1", 1, 12, seed=7)
    ann = write_csv(tmp_path / "g.csv", "subject,clip,onset,apex,offset,label", ["a,c1,1,6,12,positive"])
    ds, _ = load_micro_dataset(root, ann, MICRO, mode="apex", window=5, cache=False)
    assert np.array_equal(ds.images[0], expected_dynamic(f[3:8], MICRO))  # frames 4..8 around apex 6
    ds, _ = load_micro_dataset(root, ann, MICRO, max_frames=4, cache=False)
    picked = [f[i] for i in np.linspace(0, 11, 4).round().astype(int)]  # evenly spaced over the clip
    assert np.array_equal(ds.images[0], expected_dynamic(picked, MICRO))


def _twenty_clips(tmp_path, missing: int) -> tuple[Path, Path]:
    root = tmp_path / "d"
    rows = []
    for k in range(20):
        subject = f"s{k % 4}"
        if k >= missing:
            write_clip(root / subject / f"c{k}", 1, 3, seed=k, size=16)
            rows.append(f"{subject},c{k},1,2,3,{MEGC_CLASSES[k % 3]}")
        elif k % 2:
            rows.append(f"{subject},c{k},1,2,3,{MEGC_CLASSES[k % 3]}")  # no folder at all
        else:
            write_clip(root / subject / f"c{k}", 1, 3, seed=k, size=16)
            rows.append(f"{subject},c{k},40,41,45,{MEGC_CLASSES[k % 3]}")  # folder there, frames not
    ann = write_csv(tmp_path / "g.csv", "subject,clip,onset,apex,offset,label", rows)
    return root, ann


def test_five_percent_missing_clips_are_skipped(tmp_path):
    root, ann = _twenty_clips(tmp_path, missing=1)
    ds, subjects = load_micro_dataset(root, ann, MICRO)
    assert len(ds) == 19 and len(subjects) == 19 and ds.skipped == 1


@pytest.mark.parametrize("missing", [2, 5])
def test_more_than_five_percent_missing_clips_is_an_error(tmp_path, missing):
    root, ann = _twenty_clips(tmp_path, missing=missing)
    with pytest.raises(UserError, match=rf"{missing} of 20 annotated clips have missing frames"):
        load_micro_dataset(root, ann, MICRO)


def test_label_that_is_not_a_model_class_is_an_error(tmp_path):
    config = make_config(task="micro", classes=["calm", "tense"])
    root = tmp_path / "d"
    write_clip(root / "a" / "c1", 1, 3, seed=1, size=16)
    ann = write_csv(tmp_path / "g.csv", "subject,clip,onset,apex,offset,label", ["a,c1,1,2,3,happiness"])
    with pytest.raises(UserError, match="happiness"):
        load_micro_dataset(root, ann, config)


def test_micro_cache_returns_the_same_dataset(tmp_path, cache_dir):
    root = tmp_path / "d"
    for k in range(3):
        write_clip(root / f"s{k}" / "c", 1, 4, seed=k, size=24)
    ann = write_csv(
        tmp_path / "g.csv",
        "subject,clip,onset,apex,offset,label",
        [f"s{k},c,1,2,4,{MEGC_CLASSES[k]}" for k in range(3)],
    )
    first, subj1 = load_micro_dataset(root, ann, MICRO)
    assert len(list(cache_dir.glob("micro-*.npz"))) == 1
    second, subj2 = load_micro_dataset(root, ann, MICRO)
    assert np.array_equal(first.images, second.images) and np.array_equal(first.labels, second.labels)
    assert subj1 == subj2 == ["s0", "s1", "s2"]
    assert all(isinstance(s, str) for s in subj2)


def test_micro_cache_respects_the_model_class_order(tmp_path):
    root = tmp_path / "d"
    for k in range(3):
        write_clip(root / f"s{k}" / "c", 1, 4, seed=k, size=24)
    ann = write_csv(
        tmp_path / "g.csv",
        "subject,clip,onset,apex,offset,label",
        [f"s{k},c,1,2,4,{MEGC_CLASSES[k]}" for k in range(3)],
    )
    megc, _ = load_micro_dataset(root, ann, MICRO)
    assert megc.labels.tolist() == [0, 1, 2]
    reordered = make_config(task="micro", classes=["surprise", "negative", "positive"])
    ds, _ = load_micro_dataset(root, ann, reordered)
    assert ds.classes == ("surprise", "negative", "positive")
    assert ds.labels.tolist() == [1, 2, 0]  # negative, positive, surprise in the new order


def test_missing_clip_is_not_taken_from_another_subject(tmp_path):
    root = tmp_path / "CASME2"
    for k in range(1, 31):
        write_clip(root / f"sub{k:02d}" / "EP01_1", 1, 3, seed=k, size=16)
    rows = [f"{k},EP01_1,1,2,3,happiness" for k in range(1, 31)]
    rows.append("31,EP01_1,1,2,3,happiness")  # sub31 has no folder at all
    ann = write_csv(tmp_path / "casme2.csv", CASME2_HEADER, rows)
    ds, subjects = load_micro_dataset(root, ann, MICRO, convention="casme2")
    assert "sub31" not in subjects
    assert len(ds) == 30 and ds.skipped == 1


# ---------------------------------------------------------------------------------------------
# Leave-one-subject-out folds
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "subjects",
    [
        ["s2", "s1", "s1", "s3", "s2", "s3", "s3"],
        ["sub01"],
        ["006", "007", "006", "010", "010", "010", "007", "011"],
    ],
)
def test_loso_folds_partition_by_subject(subjects):
    folds = loso_folds(subjects)
    subj = np.asarray(subjects)
    assert sorted(s for s, _, _ in folds) == sorted(set(subjects))
    tested = np.concatenate([te for _, _, te in folds])
    assert sorted(tested.tolist()) == list(range(len(subjects)))  # every sample tested exactly once
    for held_out, tr, te in folds:
        assert set(subj[te]) == {held_out}
        assert held_out not in set(subj[tr])
        assert not set(subj[tr]) & set(subj[te])
        assert sorted(np.concatenate([tr, te]).tolist()) == list(range(len(subjects)))
