"""The captioned-shapes dataset: determinism, captions that match pixels, held-out pairs."""
import re

import numpy as np
import pytest

from miniclip.data.shapes import (COLOUR_RGB, COLOURS, HELDOUT_PAIRS, POSITIONS, SHAPES, SIZES,
                                  ShapesDataset, caption_corpus, zero_shot_tasks)


def grid_cell(position):
    """(row, column) of a position name, read from its words."""
    row = 0 if "top" in position else 2 if "bottom" in position else 1
    col = 0 if "left" in position else 2 if "right" in position else 1
    return row, col


def test_deterministic_from_seed_and_index():
    a = ShapesDataset("train", seed=0, size=300)
    b = ShapesDataset("train", seed=0, size=300)
    image, caption, attrs = a[17]
    image2, caption2, attrs2 = b[17]
    np.testing.assert_array_equal(image, image2)
    assert caption == caption2 and attrs == attrs2
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    # batch generation agrees with single items, in any order
    np.testing.assert_array_equal(a.images([5, 17, 2])[1], image)
    np.testing.assert_array_equal(a.arrays()[[2, 5, 17]], a.images([2, 5, 17]))
    assert a.captions([17])[0] == caption
    # the size of the set does not change image i
    np.testing.assert_array_equal(ShapesDataset("train", seed=0, size=20)[17][0], image)
    # another seed or split gives other images
    other = ShapesDataset("train", seed=1, size=300).arrays()
    assert np.mean([not np.array_equal(x, y) for x, y in zip(a.arrays(), other)]) > 0.99
    test = ShapesDataset("test", seed=0, size=300).arrays()
    assert not np.array_equal(test[:10], a.arrays()[:10])


def test_caption_templates_vary_with_rng():
    ds = ShapesDataset("train", seed=0, size=200)
    idx = np.arange(200)
    first = ds.captions(idx, np.random.default_rng(0))
    assert first == ds.captions(idx, np.random.default_rng(0))
    second = ds.captions(idx, np.random.default_rng(1))
    assert sum(x != y for x, y in zip(first, second)) > 100
    assert len(set(first)) > 150
    assert any(" an orange" in c for c in first) and not any(" a orange" in c for c in first)


def test_captions_name_what_is_drawn():
    ds = ShapesDataset("test", seed=3, size=300)
    images = ds.arrays()
    captions = ds.captions(np.arange(300), np.random.default_rng(0))
    areas = {}
    for i in range(300):
        attrs = ds.attributes(i)
        assert len(attrs["objects"]) == 1
        words = set(re.findall(r"[a-z]+", captions[i]))
        # every attribute word in the caption is the true one
        assert words & set(COLOURS) <= {attrs["colour"]}, captions[i]
        assert words & set(SHAPES) <= {attrs["shape"]}, captions[i]
        assert words & set(SIZES) <= {attrs["size"]}, captions[i]
        where = {"middle": "center"}
        said = {where.get(w, w) for w in words & {"top", "bottom", "left", "right", "center", "middle"}}
        assert said <= set(attrs["position"].split()), captions[i]

        # the pixels: classify each pixel as the nearest base colour or the background
        image = images[i].astype(np.float32)
        background = np.median(image.reshape(-1, 3), axis=0)
        centres = np.concatenate([COLOUR_RGB, background[None]])  # (9, 3)
        distance = np.sqrt(((image[:, :, None, :] - centres) ** 2).sum(-1))  # (S, S, 9)
        nearest = np.argmin(distance, axis=-1)  # (S, S)
        solid = (nearest != len(COLOURS)) & (distance.min(-1) < 50)  # not a blended edge
        colour = COLOURS.index(attrs["colour"])
        ys, xs = np.nonzero(solid & (nearest == colour))
        assert len(ys) >= 10, f"image {i}: almost no {attrs['colour']} pixels"
        assert np.mean(nearest[solid] == colour) > 0.9, f"image {i}: not one {attrs['colour']} object"
        row, col = grid_cell(attrs["position"])
        assert int(ys.mean() // (32 / 3)) == row and int(xs.mean() // (32 / 3)) == col, \
            f"image {i}: the {attrs['colour']} pixels are not in the {attrs['position']}"
        areas.setdefault((attrs["shape"], attrs["size"]), []).append(len(ys))
    for shape in SHAPES:
        assert np.mean(areas[shape, "large"]) > 1.5 * np.mean(areas[shape, "small"])


def test_two_object_relations():
    ds = ShapesDataset("train", seed=0, size=3000)
    assert 0.2 < np.mean(ds.objects["count"] == 2) < 0.3
    rng = np.random.default_rng(0)
    pattern = re.compile(r"an? (?:(?:small|large) )?(\w+) (\w+) (to the left of|to the right of|"
                         r"above|below) an? (?:(?:small|large) )?(\w+) (\w+)\.")
    checked = 0
    for _ in range(3):
        for i, caption in zip(range(3000), ds.captions(np.arange(3000), rng)):
            match = pattern.fullmatch(caption)
            if not match:
                continue
            c1, s1, relation, c2, s2 = match.groups()
            objects = ds.attributes(i)["objects"]
            first = [o for o in objects if (o["colour"], o["shape"]) == (c1, s1)]
            second = [o for o in objects if (o["colour"], o["shape"]) == (c2, s2)]
            assert first and second, caption
            if (c1, s1) == (c2, s2):
                continue  # two identical objects: the relation says nothing checkable
            (r1, k1), (r2, k2) = grid_cell(first[0]["position"]), grid_cell(second[0]["position"])
            truth = {"to the left of": k1 < k2, "to the right of": k1 > k2,
                     "above": r1 < r2, "below": r1 > r2}
            assert truth[relation], f"{caption} but {first[0]} / {second[0]}"
            checked += 1
    assert checked > 50


def test_heldout_pairs_never_in_training():
    held = set(HELDOUT_PAIRS)
    for split in ("train", "test"):
        ds = ShapesDataset(split, seed=0, size=5000)
        pairs = {(COLOURS[c], SHAPES[s]) for c, s in
                 zip(ds.objects["colour"][ds.objects["colour"] >= 0],
                     ds.objects["shape"][ds.objects["shape"] >= 0])}
        assert not pairs & held
        if split == "train":  # every colour and every shape alone is still seen
            assert {c for c, _ in pairs} == set(COLOURS) and {s for _, s in pairs} == set(SHAPES)
            assert len(pairs) == len(COLOURS) * len(SHAPES) - len(held)
    heldout = ShapesDataset("heldout", seed=0, size=500)
    seen = {(heldout.attributes(i)["colour"], heldout.attributes(i)["shape"]) for i in range(500)}
    assert seen == held


def test_labels_and_attributes_agree():
    ds = ShapesDataset("test", seed=0, size=100)
    for name in ("colour", "shape", "size", "position"):
        labels = ds.labels(name)
        assert labels.dtype == np.int64 and labels.shape == (100,)
        names = {"colour": COLOURS, "shape": SHAPES, "size": SIZES, "position": POSITIONS}[name]
        for i in range(0, 100, 7):
            attrs = ds.attributes(i)
            assert labels[i] == attrs[name + "_index"] and names[labels[i]] == attrs[name]
    classnames, _ = zero_shot_tasks()["object"]
    objects = ds.labels("object")
    assert all(classnames[objects[i]] == f"{ds[i][2]['colour']} {ds[i][2]['shape']}" for i in range(10))


def test_zero_shot_tasks_and_corpus():
    tasks = zero_shot_tasks()
    assert tasks["colour"][0] == COLOURS and tasks["shape"][0] == SHAPES
    assert tasks["position"][0] == POSITIONS and tasks["size"][0] == SIZES
    for classnames, templates in tasks.values():
        assert all(t.count("{}") == 1 for t in templates)
        assert not any(re.search(r"\ba \{\}", t) for t in templates if classnames is COLOURS)
    corpus = caption_corpus(num_captions=500, seed=0)
    prompts = sum(len(c) * len(t) for c, t in tasks.values())
    assert len(corpus) == 500 + prompts
    assert "a shape in the top left." in corpus
    text = " ".join(corpus)
    assert all(c in text for c in COLOURS) and all(s in text for s in SHAPES)


def test_image_size_64_and_bad_arguments():
    ds = ShapesDataset("test", seed=0, image_size=64, size=4)
    assert ds.arrays().shape == (4, 64, 64, 3)
    with pytest.raises(ValueError, match="split"):
        ShapesDataset("validation")
    with pytest.raises(IndexError):
        ds[4]
    with pytest.raises(IndexError):
        ds.images([0, 9])
