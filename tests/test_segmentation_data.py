import shutil

import numpy as np
import pytest
from PIL import Image

from vislab.data import load_dataset
from vislab.data.segmentation import VOC_CLASSES, read_mask, voc_palette
from vislab.errors import VislabError
from vislab.tasks import load_config


def load_voc2012(data_dir):
    return load_dataset(load_config(None, ["data=voc2012", f"data_dir={data_dir}"]))


def load_segfolder(root, ignore_index):
    return load_dataset(
        load_config(None, [f"data=segfolder:{root}", f"segmentation.ignore_index={ignore_index}"])
    )


def test_voc_palette_masks_load_as_class_indices_and_ignore(voc_dir):
    splits = load_voc2012(voc_dir)
    assert len(splits.classes) == 21 and splits.ignore_index == 255
    assert [p.stem for p in splits.train.image_files] == ["2011_000003", "2011_000006"]
    bus = read_mask(voc_dir / "VOCdevkit/VOC2012/SegmentationClass/2011_000025.png")
    # The photo is a bus seen from the front, a white van to its right and sky above.
    assert VOC_CLASSES[bus[187, 250]] == "bus" and VOC_CLASSES[bus[200, 460]] == "car" and bus[5, 5] == 0
    person = read_mask(voc_dir / "VOCdevkit/VOC2012/SegmentationClass/2011_000003.png")
    assert set(np.unique(person)) == {0, 5, 15, 255}  # background, bottle, person, and object outlines


def test_voc_palette_matches_the_official_colours():
    palette = voc_palette(21)
    assert palette[0] == (0, 0, 0) and palette[1] == (128, 0, 0) and palette[15] == (192, 128, 128)


def test_segfolder_reads_camvid(camvid):
    splits = load_segfolder(camvid, ignore_index=11)
    assert (len(splits.train), len(splits.val), len(splits.classes)) == (367, 101, 11)
    assert splits.classes[0] == "sky" and splits.train.mask_files[0].parent.name == "masks"


@pytest.fixture
def small_camvid(camvid, tmp_path):
    root = tmp_path / "small"
    for split in ("train", "val"):
        for kind in ("images", "masks"):
            (root / split / kind).mkdir(parents=True)
        for image in sorted((camvid / split / "images").iterdir())[:3]:
            shutil.copy(image, root / split / "images")
            shutil.copy(camvid / split / "masks" / f"{image.stem}.png", root / split / "masks")
    shutil.copy(camvid / "classes.txt", root)
    return root


def test_a_mask_of_another_size_is_named(small_camvid):
    mask = next((small_camvid / "train" / "masks").iterdir())
    Image.open(mask).resize((100, 100), Image.NEAREST).save(mask)
    with pytest.raises(VislabError, match=f"mask {mask} is 100x100, its image .* 480x360"):
        load_segfolder(small_camvid, ignore_index=11)


def test_a_mask_value_outside_the_classes_is_named(small_camvid):
    mask = sorted((small_camvid / "val" / "masks").iterdir())[1]
    values = np.array(Image.open(mask))
    values[0, 0] = 42
    Image.fromarray(values).save(mask)
    with pytest.raises(VislabError, match=f"mask {mask} holds \\[42\\]"):
        load_segfolder(small_camvid, ignore_index=11)


def test_a_missing_mask_is_named(small_camvid):
    mask = sorted((small_camvid / "train" / "masks").iterdir())[2]
    mask.unlink()
    with pytest.raises(VislabError, match=f"mask not found: {mask}"):
        load_segfolder(small_camvid, ignore_index=11)


def test_sbd_images_join_voc_train_except_voc_val(voc_dir, tmp_path):
    """A miniature SBD in its release layout (JPEGs and .mat masks) made from the real VOC sample."""
    from scipy.io import savemat

    data_dir = tmp_path / "data"
    shutil.copytree(voc_dir / "VOCdevkit", data_dir / "VOCdevkit")
    voc = data_dir / "VOCdevkit" / "VOC2012"
    sbd = data_dir / "SBD"
    (sbd / "img").mkdir(parents=True)
    (sbd / "cls").mkdir()
    for image_id, source in (("2008_900001", "2011_000025"), ("2011_000025", "2011_000025")):
        shutil.copy(voc / "JPEGImages" / f"{source}.jpg", sbd / "img" / f"{image_id}.jpg")
        mask = read_mask(voc / "SegmentationClass" / f"{source}.png")
        savemat(sbd / "cls" / f"{image_id}.mat", {"GTcls": {"Segmentation": mask}})
    (sbd / "train.txt").write_text("2008_900001\n")
    (sbd / "val.txt").write_text("2011_000025\n")  # a VOC 2012 val image: it must stay out of train
    splits = load_dataset(
        load_config(None, ["data=voc2012", f"data_dir={data_dir}", "segmentation.sbd=true"])
    )
    assert [p.stem for p in splits.train.image_files] == ["2011_000003", "2011_000006", "2008_900001"]
    converted = read_mask(splits.train.mask_files[-1])
    assert np.array_equal(converted, read_mask(voc / "SegmentationClass" / "2011_000025.png"))
