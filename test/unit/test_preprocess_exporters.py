"""Preprocessing as the exporters do it, each mode checked against a reference written here from the
exporter's documented behaviour (OpenCV and Pillow called directly), and the manifest fields that select it."""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import pytest
from PIL import Image

from robot_model_deployer.bundle.manifest import (ColorOrder, InputSpec, Interpolation, Layout, LetterboxAlign,
                                                  ManifestError, ResizeMode, TensorType, manifest_from_dict)
from robot_model_deployer.inference.preprocess import ImageTransform, PixelFormat, Preprocessor

LINEAR = Interpolation.OPENCV_LINEAR


def photo(width: int, height: int, seed: int = 0) -> np.ndarray:
    """Smooth gradients plus noise: resampling differences show, as in camera images."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width]
    base = np.stack([xs * 255 / max(width - 1, 1), ys * 255 / max(height - 1, 1), (xs + ys) % 256], axis=2)
    return np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)


def ultralytics_letterbox(bgr: np.ndarray, height: int, width: int, center: bool, fill: int) -> np.ndarray:
    """Ultralytics' LetterBox as its documentation describes it: scale by min(h ratio, w ratio), round the new
    size, resize with cv2 INTER_LINEAR, split the padding with round(d - 0.1) / round(d + 0.1) (centred) or put
    it all right and bottom, then copyMakeBorder with the fill colour."""
    ratio = min(height / bgr.shape[0], width / bgr.shape[1])
    new_w, new_h = int(round(bgr.shape[1] * ratio)), int(round(bgr.shape[0] * ratio))
    dw, dh = width - new_w, height - new_h
    if center:
        dw, dh = dw / 2, dh / 2
    if (bgr.shape[1], bgr.shape[0]) != (new_w, new_h):
        bgr = cv2.resize(bgr, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    top, bottom = (int(round(dh - 0.1)), int(round(dh + 0.1))) if center else (0, int(round(dh + 0.1)))
    left, right = (int(round(dw - 0.1)), int(round(dw + 0.1))) if center else (0, int(round(dw + 0.1)))
    return cv2.copyMakeBorder(bgr, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(fill, fill, fill))


def ultralytics_input(bgr: np.ndarray, height: int, width: int, center: bool = True, fill: int = 114) -> np.ndarray:
    """What an Ultralytics predictor feeds its ONNX export: letterboxed BGR to RGB, CHW, float32 / 255."""
    boxed = ultralytics_letterbox(bgr, height, width, center, fill)
    return (boxed[:, :, ::-1].transpose(2, 0, 1)[None].astype(np.float32) / 255.0)


def ultralytics_spec(width: int, height: int, align: LetterboxAlign = LetterboxAlign.CENTER) -> InputSpec:
    return InputSpec(width=width, height=height, resize=ResizeMode.LETTERBOX, letterbox_fill=114,
                     letterbox_align=align, interpolation=LINEAR)


# Camera (w, h) -> model input (w, h): wide and tall cameras, a wide model input, upscaling, odd sizes.
SIZES = [((1280, 720), (640, 640)), ((480, 640), (640, 640)), ((1280, 720), (640, 384)), ((200, 150), (320, 320)),
         ((333, 517), (224, 160)), ((640, 640), (640, 640))]


@pytest.mark.parametrize("camera, model", SIZES)
@pytest.mark.parametrize("center", [True, False])
def test_letterbox_matches_ultralytics_exactly(camera: tuple[int, int], model: tuple[int, int], center: bool) -> None:
    bgr = photo(*camera)
    align = LetterboxAlign.CENTER if center else LetterboxAlign.TOP_LEFT
    tensor, _ = Preprocessor(ultralytics_spec(*model, align))(bgr, PixelFormat.BGR8)
    reference = ultralytics_input(bgr, model[1], model[0], center)
    assert tensor.shape == reference.shape == (1, 3, model[1], model[0])
    # The same pixels (x * (1/255) and x / 255 differ in the last float bit only).
    np.testing.assert_array_equal(np.rint(tensor * 255), np.rint(reference * 255))
    np.testing.assert_allclose(tensor, reference, atol=1e-6, rtol=0)


def test_top_left_letterbox_pads_only_right_and_bottom_and_maps_boxes_back() -> None:
    image = np.zeros((60, 120, 3), np.uint8)
    image[20:40, 40:60] = 255
    spec = InputSpec(width=60, height=60, resize=ResizeMode.LETTERBOX, letterbox_fill=0,
                     letterbox_align=LetterboxAlign.TOP_LEFT, layout=Layout.NHWC, dtype=TensorType.UINT8,
                     interpolation=LINEAR)
    tensor, transform = Preprocessor(spec)(image, PixelFormat.RGB8)
    assert transform == ImageTransform(0.5, 0.5, 0.0, 0.0)
    assert (tensor[0, 30:] == 0).all()
    ys, xs = np.nonzero(tensor[0, :, :, 0] > 127)
    assert (xs.min(), xs.max() + 1, ys.min(), ys.max() + 1) == (20, 30, 10, 20)
    back = transform.boxes_to_image(np.array([[20, 10, 30, 20]], np.float32), 120, 60)
    np.testing.assert_allclose(back, [[40, 20, 60, 40]])


def test_tf_object_detection_input_is_uint8_nhwc_padded_bottom_right_with_zeros() -> None:
    """TF OD API keep_aspect_ratio_resizer (pad_to_max_dimension): bilinear resize, zero pad bottom/right."""
    rgb = photo(400, 300, seed=3)
    spec = InputSpec(width=320, height=320, resize=ResizeMode.LETTERBOX, letterbox_fill=0,
                     letterbox_align=LetterboxAlign.TOP_LEFT, layout=Layout.NHWC, dtype=TensorType.UINT8,
                     interpolation=LINEAR)
    tensor, _ = Preprocessor(spec)(rgb, PixelFormat.RGB8)
    reference = np.zeros((320, 320, 3), np.uint8)
    reference[:240, :320] = cv2.resize(rgb, (320, 240), interpolation=cv2.INTER_LINEAR)
    assert tensor.dtype == np.uint8 and tensor.shape == (1, 320, 320, 3)
    np.testing.assert_array_equal(tensor[0], reference)


@pytest.mark.parametrize("interpolation, flag", [
    (Interpolation.OPENCV_LINEAR, cv2.INTER_LINEAR), (Interpolation.OPENCV_NEAREST, cv2.INTER_NEAREST),
    (Interpolation.OPENCV_AREA, cv2.INTER_AREA), (Interpolation.OPENCV_CUBIC, cv2.INTER_CUBIC),
])
@pytest.mark.parametrize("size", [(96, 64), (400, 250)])
def test_stretch_with_each_opencv_interpolation_is_cv2_resize(interpolation: Interpolation, flag: int,
                                                              size: tuple[int, int]) -> None:
    rgb = photo(200, 150, seed=1)
    spec = InputSpec(width=size[0], height=size[1], layout=Layout.NHWC, dtype=TensorType.UINT8,
                     interpolation=interpolation)
    tensor, _ = Preprocessor(spec)(rgb, PixelFormat.RGB8)
    np.testing.assert_array_equal(tensor[0], cv2.resize(rgb, size, interpolation=flag))


def test_pil_bilinear_stays_the_default_and_is_pillows_resize() -> None:
    rgb = photo(320, 240, seed=2)
    spec = InputSpec(width=80, height=60, layout=Layout.NHWC, dtype=TensorType.UINT8)
    assert spec.interpolation is Interpolation.PIL_BILINEAR
    tensor, _ = Preprocessor(spec)(rgb, PixelFormat.RGB8)
    np.testing.assert_array_equal(tensor[0], np.asarray(Image.fromarray(rgb).resize((80, 60), Image.BILINEAR)))


def test_opencv_linear_and_pil_bilinear_differ_when_downscaling() -> None:
    """Why the field exists: PIL antialiases, cv2 INTER_LINEAR samples; a model trained on one sees the other
    as a shifted input distribution."""
    rgb = photo(640, 480, seed=4)
    outputs = [Preprocessor(InputSpec(width=160, height=120, layout=Layout.NHWC, dtype=TensorType.UINT8,
                                      interpolation=i))(rgb, PixelFormat.RGB8)[0].astype(int)
               for i in (Interpolation.PIL_BILINEAR, Interpolation.OPENCV_LINEAR)]
    assert np.abs(outputs[0] - outputs[1]).mean() > 3.0


def test_center_crop_with_opencv_is_resize_to_cover_then_middle_crop() -> None:
    rgb = photo(300, 200, seed=5)
    spec = InputSpec(width=100, height=100, resize=ResizeMode.CENTER_CROP, layout=Layout.NHWC,
                     dtype=TensorType.UINT8, interpolation=LINEAR)
    tensor, transform = Preprocessor(spec)(rgb, PixelFormat.RGB8)
    covered = cv2.resize(rgb, (150, 100), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(tensor[0], covered[:, 25:125])
    assert transform == ImageTransform(0.5, 0.5, -25.0, 0.0)


@pytest.mark.parametrize("layout", [Layout.NCHW, Layout.NHWC])
@pytest.mark.parametrize("dtype, atol", [(TensorType.FLOAT32, 1e-5), (TensorType.FLOAT16, 2e-3)])
def test_float_normalisation_in_either_layout(layout: Layout, dtype: TensorType, atol: float) -> None:
    """torchvision's ImageNet normalisation, (x / 255 - mean) / std per channel, computed in float64 here."""
    rgb = photo(64, 48, seed=6)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    spec = InputSpec(width=64, height=48, layout=layout, dtype=dtype, mean=mean, std=std)
    tensor, _ = Preprocessor(spec)(rgb, PixelFormat.RGB8)
    reference = (rgb / 255.0 - np.array(mean)) / np.array(std)
    if layout is Layout.NCHW:
        reference = reference.transpose(2, 0, 1)
    assert tensor.dtype == {TensorType.FLOAT32: np.float32, TensorType.FLOAT16: np.float16}[dtype]
    assert tensor.flags.c_contiguous
    np.testing.assert_allclose(tensor[0].astype(np.float64), reference, atol=atol, rtol=0)


@pytest.mark.parametrize("pixel_format, code", [(PixelFormat.RGB8, cv2.COLOR_RGB2GRAY),
                                                (PixelFormat.BGR8, cv2.COLOR_BGR2GRAY)])
def test_gray_letterbox_is_cv2_gray_then_resized(pixel_format: PixelFormat, code: int) -> None:
    image = photo(120, 80, seed=7)
    spec = InputSpec(width=64, height=64, resize=ResizeMode.LETTERBOX, letterbox_fill=9, color_order=ColorOrder.GRAY,
                     layout=Layout.NHWC, dtype=TensorType.UINT8, mean=(0.0,), std=(1.0,), interpolation=LINEAR)
    tensor, _ = Preprocessor(spec)(image, pixel_format)
    reference = cv2.copyMakeBorder(cv2.resize(cv2.cvtColor(image, code), (64, 43), interpolation=cv2.INTER_LINEAR),
                                   10, 11, 0, 0, cv2.BORDER_CONSTANT, value=9)
    np.testing.assert_array_equal(tensor[0, :, :, 0], reference)


def test_a_non_contiguous_camera_view_is_accepted() -> None:
    rgb = photo(100, 80, seed=8)
    view = rgb[::2, ::2]
    spec = InputSpec(width=50, height=40, layout=Layout.NHWC, dtype=TensorType.UINT8, interpolation=LINEAR,
                     color_order=ColorOrder.BGR)
    tensor, _ = Preprocessor(spec)(view, PixelFormat.RGB8)
    np.testing.assert_array_equal(tensor[0], np.ascontiguousarray(view[:, :, ::-1]))


# The manifest fields -------------------------------------------------------------

def manifest(**input_fields: Any) -> dict[str, Any]:
    return {"schema_version": 1, "name": "m", "version": "1.0.0", "task": "detection", "model": "model.onnx",
            "input": {"width": 640, "height": 640, **input_fields}}


def test_manifest_reads_the_exporter_fields() -> None:
    spec = manifest_from_dict(manifest(resize="letterbox", letterbox_align="top_left", interpolation="opencv_linear",
                                       dtype="uint8", layout="nhwc")).input
    assert (spec.letterbox_align, spec.interpolation) == (LetterboxAlign.TOP_LEFT, Interpolation.OPENCV_LINEAR)
    assert manifest_from_dict(manifest()).input.interpolation is Interpolation.PIL_BILINEAR


@pytest.mark.parametrize("fields, message", [
    ({"interpolation": "bilinear"},
     "input.interpolation must be one of pil_bilinear, opencv_linear, opencv_nearest, opencv_area, opencv_cubic, "
     "got 'bilinear'"),
    ({"resize": "letterbox", "letterbox_align": "bottom"},
     "input.letterbox_align must be one of center, top_left, got 'bottom'"),
    ({"letterbox_align": "top_left"},
     "input.letterbox_align only applies to resize: letterbox (resize is stretch); drop it or set input.resize: "
     "letterbox"),
    ({"resize": "center_crop", "letterbox_align": "center"},
     "input.letterbox_align only applies to resize: letterbox (resize is center_crop)"),
    ({"dtype": "uint8", "scale": 0.5}, "input.scale does not apply to dtype uint8"),
    ({"dtype": "uint8", "mean": [1, 2, 3]}, "input.mean does not apply to dtype uint8"),
    ({"dtype": "uint8", "std": [1, 2, 3]}, "input.std does not apply to dtype uint8 (the model gets the resized "
                                           "pixels as they are); drop it, or set input.dtype to the model's float type"),
])
def test_bad_preprocessing_fields_are_refused_with_one_line(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ManifestError) as info:
        manifest_from_dict(manifest(**fields))
    assert message in str(info.value) and "\n" not in str(info.value)
