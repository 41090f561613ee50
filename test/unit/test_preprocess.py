"""Camera image to model input: geometry, colour, layout, dtype and normalisation."""
from __future__ import annotations

import re

import numpy as np
import pytest

from robot_model_deployer.bundle.manifest import ColorOrder, InputSpec, Layout, ResizeMode, TensorType
from robot_model_deployer.inference.preprocess import ImageTransform, PixelFormat, Preprocessor

RGB, BGR, MONO = PixelFormat.RGB8, PixelFormat.BGR8, PixelFormat.MONO8


def raw_spec(width: int, height: int, **kwargs) -> InputSpec:
    """Uint8 NHWC output: the tensor holds the resized pixels unchanged, easy to read."""
    kwargs.setdefault("dtype", TensorType.UINT8)
    kwargs.setdefault("layout", Layout.NHWC)
    if kwargs.get("color_order") is ColorOrder.GRAY:
        kwargs.setdefault("mean", (0.0,))
        kwargs.setdefault("std", (1.0,))
    return InputSpec(width=width, height=height, **kwargs)


def run(spec: InputSpec, image: np.ndarray, pixel_format: PixelFormat = RGB) -> tuple[np.ndarray, ImageTransform]:
    return Preprocessor(spec)(image, pixel_format)


def pixel_image(rgb: tuple[int, int, int], width: int = 4, height: int = 3) -> np.ndarray:
    return np.tile(np.array(rgb, np.uint8), (height, width, 1))


# Geometry ------------------------------------------------------------------------

def test_stretch_resizes_each_axis_independently() -> None:
    tensor, transform = run(raw_spec(20, 10, resize=ResizeMode.STRETCH), pixel_image((200, 100, 50), 40, 40))
    assert tensor.shape == (1, 10, 20, 3)
    assert transform == ImageTransform(0.5, 0.25, 0.0, 0.0)
    assert (tensor[0] == (200, 100, 50)).all()


def test_same_size_image_passes_through_unchanged() -> None:
    image = np.random.default_rng(0).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    tensor, transform = run(raw_spec(8, 6), image)
    assert transform == ImageTransform(1.0, 1.0, 0.0, 0.0)
    np.testing.assert_array_equal(tensor[0], image)


def test_letterbox_wide_image_pads_top_and_bottom_with_fill() -> None:
    spec = raw_spec(32, 32, resize=ResizeMode.LETTERBOX, letterbox_fill=7)
    tensor, transform = run(spec, pixel_image((200, 200, 200), 64, 32))
    assert transform == ImageTransform(0.5, 0.5, 0.0, 8.0)
    picture = tensor[0]
    assert (picture[:8] == 7).all() and (picture[24:] == 7).all()
    assert (picture[8:24] == 200).all()


def test_letterbox_tall_image_pads_left_and_right() -> None:
    spec = raw_spec(32, 32, resize=ResizeMode.LETTERBOX, letterbox_fill=0)
    tensor, transform = run(spec, pixel_image((90, 90, 90), 16, 64))
    assert transform == ImageTransform(0.5, 0.5, 12.0, 0.0)
    picture = tensor[0]
    assert (picture[:, :12] == 0).all() and (picture[:, 20:] == 0).all()
    assert (picture[:, 12:20] == 90).all()


def test_letterbox_with_uneven_scale_rounds_size_and_centres() -> None:
    _, transform = run(raw_spec(16, 16, resize=ResizeMode.LETTERBOX), pixel_image((1, 2, 3), 30, 10))
    # 30x10 scaled by 16/30 -> 16x5, centred with (16 - 5) // 2 = 5 rows above.
    assert transform.scale_x == pytest.approx(16 / 30)
    assert transform.scale_y == pytest.approx(0.5)
    assert (transform.offset_x, transform.offset_y) == (0.0, 5.0)


def test_letterbox_places_an_object_where_the_transform_says() -> None:
    image = np.zeros((60, 120, 3), np.uint8)
    image[20:40, 40:60] = 255  # a 20x20 white square at x 40..60, y 20..40
    tensor, transform = run(raw_spec(60, 60, resize=ResizeMode.LETTERBOX, letterbox_fill=0), image)
    assert transform == ImageTransform(0.5, 0.5, 0.0, 15.0)
    ys, xs = np.nonzero(tensor[0, :, :, 0] > 127)
    # Square maps to x 20..30, y 25..35 in the model input.
    assert (xs.min(), xs.max() + 1, ys.min(), ys.max() + 1) == (20, 30, 25, 35)


def test_center_crop_scales_to_cover_and_crops_the_middle() -> None:
    image = np.zeros((32, 64, 3), np.uint8)
    image[:, :32, 0] = 255  # left half red
    image[:, 32:, 2] = 255  # right half blue
    tensor, transform = run(raw_spec(16, 16, resize=ResizeMode.CENTER_CROP), image)
    assert transform == ImageTransform(0.5, 0.5, -8.0, 0.0)
    assert tensor.shape == (1, 16, 16, 3)
    picture = tensor[0]
    assert (picture[:, :7, 0] == 255).all() and (picture[:, :7, 2] == 0).all()
    assert (picture[:, 9:, 2] == 255).all() and (picture[:, 9:, 0] == 0).all()


def test_center_crop_tall_image_crops_rows() -> None:
    _, transform = run(raw_spec(16, 16, resize=ResizeMode.CENTER_CROP), pixel_image((5, 5, 5), 32, 64))
    assert transform == ImageTransform(0.5, 0.5, 0.0, -8.0)


@pytest.mark.parametrize("resize, size", [
    (ResizeMode.STRETCH, (50, 30)), (ResizeMode.LETTERBOX, (64, 48)), (ResizeMode.CENTER_CROP, (40, 40)),
    (ResizeMode.LETTERBOX, (200, 40)),
])
def test_boxes_round_trip_from_image_to_input_and_back(resize: ResizeMode, size: tuple[int, int]) -> None:
    width, height = 80, 60
    _, transform = run(raw_spec(*size, resize=resize), pixel_image((0, 0, 0), width, height))
    image_boxes = np.array([[30, 20, 50, 40], [0, 0, 80, 60], [33.5, 21.25, 34.0, 59.0]], np.float32)
    input_boxes = image_boxes.copy()
    input_boxes[:, 0::2] = image_boxes[:, 0::2] * transform.scale_x + transform.offset_x
    input_boxes[:, 1::2] = image_boxes[:, 1::2] * transform.scale_y + transform.offset_y
    back = transform.boxes_to_image(input_boxes, width, height)
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, image_boxes, atol=1e-3)


def test_boxes_in_letterbox_padding_are_clipped_to_the_image() -> None:
    transform = ImageTransform(0.5, 0.5, 0.0, 8.0)
    boxes = np.array([[-10.0, 0.0, 40.0, 4.0], [10.0, 30.0, 20.0, 40.0]], np.float32)
    back = transform.boxes_to_image(boxes, width=64, height=32)
    np.testing.assert_allclose(back, [[0, 0, 64, 0], [20, 32, 40, 32]])


def test_no_boxes_give_no_boxes() -> None:
    back = ImageTransform(1, 1, 0, 0).boxes_to_image(np.zeros((0, 4), np.float32), 10, 10)
    assert back.shape == (0, 4)


# Colour --------------------------------------------------------------------------

@pytest.mark.parametrize("stored, pixel_format, order, expected", [
    ((10, 20, 30), RGB, ColorOrder.RGB, (10, 20, 30)),
    ((30, 20, 10), BGR, ColorOrder.RGB, (10, 20, 30)),
    ((10, 20, 30), RGB, ColorOrder.BGR, (30, 20, 10)),
    ((30, 20, 10), BGR, ColorOrder.BGR, (30, 20, 10)),
])
def test_colour_order_conversion(stored, pixel_format, order, expected) -> None:
    tensor, _ = run(raw_spec(4, 3, color_order=order), pixel_image(stored), pixel_format)
    assert (tensor[0] == expected).all()


@pytest.mark.parametrize("rgb, grey", [((255, 0, 0), 76), ((0, 255, 0), 150), ((0, 0, 255), 29),
                                       ((10, 20, 30), 18), ((255, 255, 255), 255)])
@pytest.mark.parametrize("pixel_format", [RGB, BGR])
def test_gray_model_gets_luma_from_rgb_or_bgr(rgb, grey, pixel_format) -> None:
    stored = rgb if pixel_format is RGB else rgb[::-1]
    tensor, _ = run(raw_spec(4, 3, color_order=ColorOrder.GRAY), pixel_image(stored), pixel_format)
    assert tensor.shape == (1, 3, 4, 1)
    assert (tensor == grey).all()


@pytest.mark.parametrize("shape", [(3, 4), (3, 4, 1)])
def test_mono8_into_rgb_model_repeats_the_channel(shape) -> None:
    image = np.arange(12, dtype=np.uint8).reshape(shape) * 20
    tensor, _ = run(raw_spec(4, 3), image, MONO)
    assert tensor.shape == (1, 3, 4, 3)
    for channel in range(3):
        np.testing.assert_array_equal(tensor[0, :, :, channel], image.reshape(3, 4))


def test_mono8_into_gray_model_is_unchanged() -> None:
    image = np.arange(12, dtype=np.uint8).reshape(3, 4)
    tensor, _ = run(raw_spec(4, 3, color_order=ColorOrder.GRAY, layout=Layout.NCHW), image, MONO)
    assert tensor.shape == (1, 1, 3, 4)
    np.testing.assert_array_equal(tensor[0, 0], image)


# Layout and dtype ----------------------------------------------------------------

def test_nchw_and_nhwc_hold_the_same_values_transposed() -> None:
    image = np.random.default_rng(1).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    nchw, _ = run(InputSpec(width=5, height=6, layout=Layout.NCHW), image)
    nhwc, _ = run(InputSpec(width=5, height=6, layout=Layout.NHWC), image)
    assert nchw.shape == (1, 3, 6, 5) and nhwc.shape == (1, 6, 5, 3)
    assert nchw.flags.c_contiguous and nhwc.flags.c_contiguous
    np.testing.assert_array_equal(nchw[0].transpose(1, 2, 0), nhwc[0])
    # Channel 0 of NCHW is the red plane of the image.
    np.testing.assert_allclose(nchw[0, 0], image[:, :, 0] / 255.0, rtol=1e-6)


@pytest.mark.parametrize("dtype, numpy_dtype", [(TensorType.FLOAT32, np.float32), (TensorType.FLOAT16, np.float16),
                                                (TensorType.UINT8, np.uint8)])
def test_output_dtype_follows_the_manifest(dtype: TensorType, numpy_dtype) -> None:
    tensor, _ = run(InputSpec(width=4, height=3, dtype=dtype), pixel_image((0, 128, 255)))
    assert tensor.dtype == numpy_dtype
    if numpy_dtype is np.uint8:
        assert (tensor[0].transpose(1, 2, 0) == (0, 128, 255)).all()
    else:
        np.testing.assert_allclose(tensor[0, :, 0, 0].astype(np.float32), [0.0, 128 / 255, 1.0], rtol=1e-3)


def test_uint8_input_skips_scale_mean_and_std() -> None:
    spec = InputSpec(width=4, height=3, dtype=TensorType.UINT8, scale=2.0, mean=(10, 10, 10), std=(3, 3, 3))
    tensor, _ = run(spec, pixel_image((1, 2, 3)))
    assert (tensor[0, :, 0, 0] == (1, 2, 3)).all()


# Normalisation -----------------------------------------------------------------

def test_imagenet_normalisation_values() -> None:
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    spec = InputSpec(width=3, height=1, mean=mean, std=std, layout=Layout.NHWC)
    image = np.array([[[0, 0, 0], [255, 255, 255], [51, 102, 204]]], np.uint8)
    tensor, _ = run(spec, image)
    expected = (image.astype(np.float64) / 255.0 - np.array(mean)) / np.array(std)
    np.testing.assert_allclose(tensor[0], expected, rtol=1e-6, atol=1e-6)


def test_symmetric_normalisation_maps_to_minus_one_one() -> None:
    spec = InputSpec(width=3, height=1, scale=1.0, mean=(127.5,) * 3, std=(127.5,) * 3, layout=Layout.NHWC)
    image = np.array([[[0, 0, 0], [255, 255, 255], [127, 128, 255]]], np.uint8)
    tensor, _ = run(spec, image)
    np.testing.assert_allclose(tensor[0, 0, 0], [-1, -1, -1], atol=1e-7)
    np.testing.assert_allclose(tensor[0, 0, 1], [1, 1, 1], atol=1e-7)
    np.testing.assert_allclose(tensor[0, 0, 2], [-0.5 / 127.5, 0.5 / 127.5, 1.0], atol=1e-7)


def test_per_channel_mean_and_std_apply_to_the_right_channel_after_bgr_conversion() -> None:
    spec = InputSpec(width=1, height=1, color_order=ColorOrder.BGR, scale=1.0, mean=(1.0, 2.0, 3.0),
                     std=(1.0, 2.0, 4.0), layout=Layout.NHWC)
    tensor, _ = run(spec, np.array([[[100, 50, 20]]], np.uint8), RGB)  # BGR order: 20, 50, 100
    np.testing.assert_allclose(tensor[0, 0, 0], [(20 - 1) / 1, (50 - 2) / 2, (100 - 3) / 4], rtol=1e-6)


def test_gray_normalisation_uses_its_single_mean_and_std() -> None:
    spec = InputSpec(width=2, height=1, color_order=ColorOrder.GRAY, scale=0.5, mean=(10.0,), std=(5.0,))
    tensor, _ = run(spec, np.array([[40, 80]], np.uint8), MONO)
    np.testing.assert_allclose(tensor[0, 0, 0], [(20 - 10) / 5, (40 - 10) / 5], rtol=1e-6)


def test_float16_values_match_float32_within_half_precision() -> None:
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.3, 0.4)
    image = np.random.default_rng(2).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    full, _ = run(InputSpec(width=7, height=5, mean=mean, std=std), image)
    half, _ = run(InputSpec(width=7, height=5, mean=mean, std=std, dtype=TensorType.FLOAT16), image)
    np.testing.assert_allclose(half.astype(np.float32), full, rtol=1e-3, atol=1e-3)


# Bad input -----------------------------------------------------------------------

@pytest.mark.parametrize("image", [
    np.zeros((4, 4, 3), np.float32), np.zeros((4, 4, 3), np.uint16), np.zeros(12, np.uint8),
    np.zeros((1, 4, 4, 3), np.uint8),
], ids=["float32", "uint16", "1-d", "4-d"])
def test_bad_image_shape_or_dtype_raises_value_error(image: np.ndarray) -> None:
    with pytest.raises(ValueError, match=r"expected an HxW or HxWxC uint8 image"):
        run(InputSpec(width=4, height=4), image)


@pytest.mark.parametrize("shape, pixel_format, spec", [
    ((8, 8, 4), RGB, InputSpec(width=8, height=8, dtype=TensorType.UINT8)),
    ((8, 8, 2), BGR, InputSpec(width=8, height=8, dtype=TensorType.UINT8)),
    ((8, 8, 1), RGB, InputSpec(width=8, height=8)),
    ((8, 8, 3), MONO, InputSpec(width=8, height=8, color_order=ColorOrder.GRAY, mean=(0.0,), std=(1.0,))),
], ids=["rgb8-4ch", "bgr8-2ch", "rgb8-1ch", "mono8-3ch"])
def test_channel_count_must_match_pixel_format(shape, pixel_format, spec) -> None:
    with pytest.raises(ValueError, match=rf"pixel format {pixel_format.value} needs \d channel\(s\).*"
                                         rf"got an image of shape {re.escape(str(shape))}"):
        run(spec, np.zeros(shape, np.uint8), pixel_format)


@pytest.mark.parametrize("image, pixel_format", [
    (np.zeros((8, 8), np.uint8), MONO), (np.zeros((8, 8, 1), np.uint8), MONO), (np.zeros((8, 8, 3), np.uint8), BGR),
], ids=["mono8-2d", "mono8-1ch", "bgr8-3ch"])
def test_matching_channel_counts_are_accepted(image: np.ndarray, pixel_format: PixelFormat) -> None:
    tensor, _ = run(InputSpec(width=4, height=4), image, pixel_format)
    assert tensor.shape == (1, 3, 4, 4)


@pytest.mark.parametrize("shape", [(0, 8, 3), (8, 0, 3)])
def test_empty_image_raises_value_error(shape) -> None:
    with pytest.raises(ValueError, match="expected a non-empty image"):
        run(InputSpec(width=4, height=4), np.zeros(shape, np.uint8))


@pytest.mark.parametrize("kwargs, problem", [
    ({"color_order": ColorOrder.GRAY}, "mean has 3 value(s) but color_order gray has 1 channel(s)"),
    ({"color_order": ColorOrder.GRAY, "mean": (0.0,)}, "std has 3 value(s) but color_order gray has 1 channel(s)"),
    ({"std": (1.0,)}, "std has 1 value(s) but color_order rgb has 3 channel(s)"),
])
def test_input_spec_needs_one_mean_and_std_value_per_channel(kwargs: dict, problem: str) -> None:
    with pytest.raises(ValueError) as info:
        InputSpec(width=4, height=4, **kwargs)
    assert problem in str(info.value) and "one value per channel" in str(info.value)
