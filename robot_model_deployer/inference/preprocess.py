"""Camera image to model input tensor, as the bundle's InputSpec says."""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np
from PIL import Image

from robot_model_deployer.bundle.manifest import ColorOrder, InputSpec, Layout, ResizeMode, TensorType


class PixelFormat(str, Enum):
    """Pixel layouts accepted from cameras (sensor_msgs/Image encodings)."""

    RGB8 = "rgb8"
    BGR8 = "bgr8"
    MONO8 = "mono8"

    @property
    def channels(self) -> int:
        """Bytes per pixel: 1 for mono8, 3 for rgb8 and bgr8."""
        return 1 if self is PixelFormat.MONO8 else 3


@dataclass(frozen=True)
class ImageTransform:
    """Maps image pixels to model-input pixels: ``input = image * scale + offset``."""

    scale_x: float
    scale_y: float
    offset_x: float
    offset_y: float

    def boxes_to_image(self, boxes: np.ndarray, width: int, height: int) -> np.ndarray:
        """Model-input boxes (x1, y1, x2, y2) back to image pixels, clipped to the image."""
        out = np.empty_like(boxes, dtype=np.float32)
        out[:, 0::2] = (boxes[:, 0::2] - self.offset_x) / self.scale_x
        out[:, 1::2] = (boxes[:, 1::2] - self.offset_y) / self.scale_y
        np.clip(out[:, 0::2], 0, width, out=out[:, 0::2])
        np.clip(out[:, 1::2], 0, height, out=out[:, 1::2])
        return out


_NUMPY_DTYPES = {TensorType.FLOAT32: np.float32, TensorType.FLOAT16: np.float16, TensorType.UINT8: np.uint8}
_GRAY_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)


class Preprocessor:
    """Resizes, converts colour, normalises and lays out one image."""

    def __init__(self, spec: InputSpec) -> None:
        self.spec = spec
        channels = spec.channels
        std = np.asarray(spec.std, dtype=np.float32).reshape(1, 1, channels)
        self._multiplier = (np.float32(spec.scale) / std).astype(np.float32)
        self._bias = (np.asarray(spec.mean, dtype=np.float32).reshape(1, 1, channels) / std).astype(np.float32)
        self._dtype = _NUMPY_DTYPES[spec.dtype]

    def __call__(self, image: np.ndarray, pixel_format: PixelFormat) -> tuple[np.ndarray, ImageTransform]:
        """Returns the input tensor (batch of one) and the pixel transform used."""
        if image.ndim == 2:
            image = image[:, :, None]
        if image.ndim != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an HxW or HxWxC uint8 image, got shape {image.shape} dtype {image.dtype}")
        if image.shape[0] == 0 or image.shape[1] == 0:
            raise ValueError(f"expected a non-empty image, got {image.shape[0]} rows and {image.shape[1]} columns")
        channels = pixel_format.channels
        if image.shape[2] != channels:
            raise ValueError(
                f"pixel format {pixel_format.value} needs {channels} channel(s) "
                f"({'HxW or HxWx1' if channels == 1 else 'HxWx3'}), got an image of shape {image.shape}"
            )
        image = self._convert_color(image, pixel_format)
        resized, transform = self._resize(image)
        tensor = self._normalise(resized)
        if self.spec.layout is Layout.NCHW:
            tensor = tensor.transpose(2, 0, 1)
        return np.ascontiguousarray(tensor[None]), transform

    def _convert_color(self, image: np.ndarray, pixel_format: PixelFormat) -> np.ndarray:
        want = self.spec.color_order
        if pixel_format is PixelFormat.MONO8:
            return image if want is ColorOrder.GRAY else np.repeat(image[:, :, :1], 3, axis=2)
        if want is ColorOrder.GRAY:
            rgb = image if pixel_format is PixelFormat.RGB8 else image[:, :, ::-1]
            return (rgb.astype(np.float32) @ _GRAY_WEIGHTS).round().astype(np.uint8)[:, :, None]
        same_order = (pixel_format is PixelFormat.RGB8) == (want is ColorOrder.RGB)
        return image if same_order else image[:, :, ::-1]

    def _resize(self, image: np.ndarray) -> tuple[np.ndarray, ImageTransform]:
        height, width = image.shape[:2]
        target_w, target_h = self.spec.width, self.spec.height
        mode = self.spec.resize
        if mode is ResizeMode.STRETCH:
            sx, sy = target_w / width, target_h / height
            return _resize(image, target_w, target_h), ImageTransform(sx, sy, 0.0, 0.0)
        if mode is ResizeMode.LETTERBOX:
            scale = min(target_w / width, target_h / height)
            new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
            pad_x, pad_y = (target_w - new_w) // 2, (target_h - new_h) // 2
            canvas = np.full((target_h, target_w, image.shape[2]), self.spec.letterbox_fill, dtype=np.uint8)
            canvas[pad_y:pad_y + new_h, pad_x:pad_x + new_w] = _resize(image, new_w, new_h)
            return canvas, ImageTransform(new_w / width, new_h / height, float(pad_x), float(pad_y))
        scale = max(target_w / width, target_h / height)
        new_w, new_h = max(target_w, round(width * scale)), max(target_h, round(height * scale))
        crop_x, crop_y = (new_w - target_w) // 2, (new_h - target_h) // 2
        resized = _resize(image, new_w, new_h)[crop_y:crop_y + target_h, crop_x:crop_x + target_w]
        return resized, ImageTransform(new_w / width, new_h / height, float(-crop_x), float(-crop_y))

    def _normalise(self, image: np.ndarray) -> np.ndarray:
        if self._dtype is np.uint8:
            return image
        normalised = image.astype(np.float32) * self._multiplier - self._bias
        return normalised.astype(self._dtype, copy=False)


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    if image.shape[1] == width and image.shape[0] == height:
        return image
    if image.shape[2] == 1:
        return np.asarray(Image.fromarray(image[:, :, 0]).resize((width, height), Image.BILINEAR))[:, :, None]
    return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))
