import colorsys

import pytest
import torch
import torchvision.transforms.v2.functional as F

from vislab.config import AugmentConfig
from vislab.data import load_dataset
from vislab.data.augment import BatchAugment, cutout, hue_shift, random_affine, random_crop_flip
from vislab.data.module import ImageDataModule
from vislab.data.randaugment import rand_augment
from vislab.preprocess import Preprocess
from vislab.tasks import load_config


def ramp(batch: int = 64, size: int = 16) -> torch.Tensor:
    """Images whose pixel values encode their position, so shifts and flips can be read back."""
    image = torch.arange(size * size, dtype=torch.uint8).view(1, 1, size, size)
    return image.repeat(batch, 3, 1, 1)


def test_random_crop_shifts_each_image_by_its_own_offset_within_the_padding():
    images = ramp()
    cropped = random_crop_flip(images, padding=2, hflip=False)
    assert cropped.shape == images.shape
    centres = cropped[:, 0, 8, 8].long()  # value = 16 * row + col of the source pixel
    dy, dx = centres // 16 - 8, centres % 16 - 8
    assert dy.abs().max() <= 2 and dx.abs().max() <= 2
    assert len(set(zip(dy.tolist(), dx.tolist()))) > 5  # per-sample, not one offset for the batch


def test_reflect_padding_fills_the_border_with_the_image_mirrored_at_it():
    images = ramp()
    for reflect in (False, True):
        cropped = random_crop_flip(images, padding=2, hflip=False, reflect=reflect)
        padded = torch.nn.functional.pad(images.float(), (2,) * 4, mode="reflect" if reflect else "constant")
        centres = cropped[:, 0, 8, 8].long()  # value = 16 * row + col of the source pixel
        tops, lefts = (centres // 16 - 8 + 2).tolist(), (centres % 16 - 8 + 2).tolist()
        expected = torch.stack([p[:, y : y + 16, x : x + 16] for p, y, x in zip(padded, tops, lefts)])
        assert torch.equal(cropped, expected.to(torch.uint8)), reflect


def test_hflip_mirrors_about_half_of_the_images():
    images = ramp(256)
    flipped = random_crop_flip(images, padding=0, hflip=True)
    mirrored = (flipped == images.flip(-1)).flatten(1).all(1)
    unchanged = (flipped == images).flatten(1).all(1)
    assert (mirrored | unchanged).all() and 64 < mirrored.sum() < 192


def test_cutout_zeroes_one_square_per_image():
    out = cutout(torch.ones(32, 3, 32, 32), 8)
    zeroed = (out == 0).all(1).flatten(1).sum(1)
    assert zeroed.max() == 64 and zeroed.min() >= 16  # a full 8x8 square, or one clipped at a corner


def test_randaugment_chooses_an_op_per_image():
    torch.manual_seed(0)
    same = torch.rand(1, 3, 32, 32).repeat(64, 1, 1, 1)
    out = rand_augment(same, num_ops=1, magnitude=9)
    distinct = {tuple(img.flatten()[:64].mul(1000).round().tolist()) for img in out}
    assert len(distinct) > 6  # one op for the whole batch would give at most 2 (op with either sign)
    assert out.min() >= 0 and out.max() <= 1


def test_mixup_gives_soft_targets_that_sum_to_one():
    augment = AugmentConfig(
        crop_padding=0,
        hflip=False,
        color_jitter=0,
        randaugment_n=0,
        randaugment_m=9,
        cutout=0,
        mixup=0.4,
        cutmix=1.0,
    )
    batch = BatchAugment(augment, [0.5] * 3, [0.25] * 3, num_classes=10)
    images, targets = batch(ramp(16), torch.arange(16) % 10)
    assert images.dtype == torch.float32 and targets.shape == (16, 10)
    assert torch.allclose(targets.sum(1), torch.ones(16))


def test_training_and_validation_standardise_with_the_given_statistics():
    batch = BatchAugment(AugmentConfig(crop_padding=0, hflip=False), [0.5] * 3, [0.5] * 3, num_classes=2)
    white = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    trained, _ = batch(white, torch.tensor([0]))
    validated = Preprocess(3, 2, (0.5,) * 3, (0.5,) * 3).normalise(white)
    assert torch.allclose(trained, torch.ones_like(trained)) and torch.equal(trained, validated)


def test_fused_colour_ops_match_torchvision_image_by_image():
    import torchvision.transforms.v2.functional as F

    from vislab.data.randaugment import OPS, blend

    torch.manual_seed(0)
    images = torch.rand(8, 3, 16, 16)
    reference = {
        "brightness": F.adjust_brightness,
        "color": F.adjust_saturation,
        "contrast": F.adjust_contrast,
        "sharpness": F.adjust_sharpness,
    }
    names = list(reference) * 2
    op = torch.tensor([OPS.index(name) for name in names])
    value = torch.linspace(-0.9, 0.9, 8)
    fused = blend(images, op, value)
    for i, name in enumerate(names):
        expected = reference[name](images[i : i + 1], 1 + value[i].item())[0]
        assert torch.allclose(fused[i], expected, atol=1e-5), name


def test_geometric_ops_move_pixels_the_way_they_say():
    from vislab.data.randaugment import OPS, geometric

    image = torch.zeros(1, 1, 9, 9)
    image[0, 0, 4, 4] = 1.0  # one lit pixel in the centre
    moved = geometric(image, torch.tensor([OPS.index("translate_x")]), torch.tensor([2.0]))
    assert moved[0, 0, 4, 6] == 1.0 and moved.sum() == 1.0
    turned = geometric(image, torch.tensor([OPS.index("rotate")]), torch.tensor([90.0]))
    assert turned[0, 0, 4, 4] == 1.0  # the centre is the rotation's fixed point


def dot_images(batch: int, size: int = 33) -> torch.Tensor:
    """Black images with a white 3x3 dot 12 pixels right of the centre."""
    images = torch.zeros(batch, 1, size, size, dtype=torch.uint8)
    images[:, 0, size // 2 - 1 : size // 2 + 2, size // 2 + 11 : size // 2 + 14] = 255
    return images


def test_rotation_turns_each_image_by_its_own_angle_uniformly_within_the_range():
    torch.manual_seed(0)
    rotated = random_affine(dot_images(2000), crop_scale=1.0, rotation=15, hflip=False)
    weights = rotated[:, 0] / rotated[:, 0].sum((1, 2), keepdim=True)
    offsets = torch.arange(33.0) - 16
    dy, dx = (weights.sum(2) * offsets).sum(1), (weights.sum(1) * offsets).sum(1)
    angles = torch.rad2deg(torch.atan2(dy, dx))  # where the dot's centre went, seen from the image's
    assert angles.abs().max() <= 15.5
    assert abs(angles.mean()) < 1 and 7 < angles.std() < 10  # uniform on [-15, 15]: std 8.7


def test_random_resized_crop_keeps_between_scale_and_all_of_the_area():
    torch.manual_seed(0)
    size = 64
    columns = torch.arange(size).float().expand(size, size)
    images = torch.stack([columns, columns.T])[None].repeat(500, 1, 1, 1)  # x and y of each source pixel
    cropped = random_affine(images, crop_scale=0.3, rotation=0, hflip=False)
    width = (cropped[:, 0, :, -1] - cropped[:, 0, :, 0]).mean(1) / (size - 1)
    height = (cropped[:, 1, -1, :] - cropped[:, 1, 0, :]).mean(1) / (size - 1)
    area = width * height
    assert area.min() > 0.3 - 0.05 and area.max() <= 1.0 + 1e-4
    assert abs(area.mean() - 0.65) < 0.05  # uniform area fraction on [0.3, 1]
    assert (cropped >= 0).all() and (cropped <= size - 1 + 1e-3).all()  # never outside the image


def test_hue_shifts_colours_both_ways_and_keeps_grey_grey():
    torch.manual_seed(0)
    red = torch.tensor([0.8, 0.2, 0.2]).view(1, 3, 1, 1).repeat(1000, 1, 4, 4)
    shifted = hue_shift(red, 0.1)[:, :, 0, 0]
    hues = torch.tensor([colorsys.rgb_to_hsv(*rgb)[0] for rgb in shifted.tolist()])
    hues = torch.where(hues > 0.5, hues - 1, hues)  # red sits at 0: signed shifts
    assert hues.abs().max() < 0.1 + 0.02 and hues.min() < -0.05 and hues.max() > 0.05
    grey = torch.full((8, 3, 4, 4), 0.5)
    assert torch.allclose(hue_shift(grey, 0.5), grey, atol=1e-5)
    images = torch.rand(6, 3, 8, 8)  # image by image, it is torchvision's adjust_hue
    torch.manual_seed(1)
    batched = hue_shift(images, 0.3)
    torch.manual_seed(1)
    shifts = ((torch.rand(6) * 2 - 1) * 0.3).tolist()
    one_by_one = torch.stack([F.adjust_hue(image, shift) for image, shift in zip(images, shifts)])
    assert torch.allclose(batched, one_by_one, atol=1e-5)


def test_offline_pixels_are_the_training_batch_before_normalisation():
    augment = BatchAugment(
        AugmentConfig(crop_padding=0, crop_scale=0.5, hflip=True, rotation=10, hue=0.1, color_jitter=0.2),
        [0.4, 0.5, 0.6],
        [0.2, 0.25, 0.3],
        10,
    )
    images = (torch.rand(16, 3, 32, 32) * 255).to(torch.uint8)
    torch.manual_seed(3)
    pixels = augment.pixels(images)
    torch.manual_seed(3)
    trained, _ = augment(images, torch.zeros(16, dtype=torch.long))
    assert torch.allclose((pixels - augment.mean) / augment.std, trained, atol=1e-6)


@pytest.mark.parametrize("in_memory", [True, False])
def test_alternating_flip_shows_every_training_image_both_ways_every_two_epochs(cifar_jpgs, in_memory):
    overrides = [f"data=folder:{cifar_jpgs}", f"in_memory={in_memory}", "augment.hflip=alternate"]
    config = load_config(overrides=overrides)
    splits = load_dataset(config)
    alternating = ImageDataModule(splits, 64, 0, config.seed, config.augment).dataset(splits.train, True)
    unflipped = config.augment.model_copy(update={"hflip": False})  # the same crops, drawn from the seed
    plain = ImageDataModule(splits, 64, 0, config.seed, unflipped).dataset(splits.train, True)
    count = 300

    def mirrored(epoch: int) -> torch.Tensor:
        keys = [(epoch, i) for i in range(count)]
        images = torch.stack([alternating[key][0] for key in keys])
        reference = torch.stack([plain[key if not in_memory else key[1]][0] for key in keys])
        flipped = (images == reference.flip(-1)).flatten(1).all(1)
        assert (flipped | (images == reference).flatten(1).all(1)).all()  # mirrored or untouched
        return flipped

    first, second = mirrored(0), mirrored(1)
    assert (first ^ second).all() and torch.equal(mirrored(2), first)
    assert 0.4 < first.float().mean() < 0.6
    # On the device, nothing flips them again: with no crop, the batch passes through unchanged.
    batch = BatchAugment(AugmentConfig(crop_padding=0, hflip="alternate"), [0.0] * 3, [1.0] * 3, 10)
    images = splits.train.images[:64] if in_memory else torch.stack([plain[(0, i)][0] for i in range(64)])
    assert torch.equal(batch.pixels(images), images.float() / 255)
