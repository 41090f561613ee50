"""Camera image to model input tensor, as the bundle's InputSpec says."""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np
from PIL import Image

from robot_model_deployer.bundle.manifest import (ColorOrder, InputSpec, Interpolation, Layout, LetterboxAlign,
                                                  ResizeMode, TensorType)
from robot_model_deployer.inference.opencv import cv2


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
_OPENCV_FLAGS = {Interpolation.OPENCV_LINEAR: cv2.INTER_LINEAR, Interpolation.OPENCV_NEAREST: cv2.INTER_NEAREST,
                 Interpolation.OPENCV_AREA: cv2.INTER_AREA, Interpolation.OPENCV_CUBIC: cv2.INTER_CUBIC}
# (camera pixel format, wanted colour order) -> cv2.cvtColor code; absent: the pixels are already in order.
_COLOR_CODES = {
    (PixelFormat.RGB8, ColorOrder.BGR): cv2.COLOR_RGB2BGR, (PixelFormat.BGR8, ColorOrder.RGB): cv2.COLOR_BGR2RGB,
    (PixelFormat.RGB8, ColorOrder.GRAY): cv2.COLOR_RGB2GRAY, (PixelFormat.BGR8, ColorOrder.GRAY): cv2.COLOR_BGR2GRAY,
    (PixelFormat.MONO8, ColorOrder.RGB): cv2.COLOR_GRAY2RGB, (PixelFormat.MONO8, ColorOrder.BGR): cv2.COLOR_GRAY2BGR,
}


class Preprocessor:
    """Resizes, converts colour, normalises and lays out one image.

    Colour conversion and resizing are OpenCV's (Pillow's bilinear only when
    the manifest asks for it); normalisation writes straight into the
    output layout, so a frame is copied as few times as possible.
    """

    def __init__(self, spec: InputSpec) -> None:
        self.spec = spec
        channels = spec.channels
        std = np.asarray(spec.std, dtype=np.float32)
        self._multiplier = (np.float32(spec.scale) / std).astype(np.float32)
        self._bias = (np.asarray(spec.mean, dtype=np.float32) / std).astype(np.float32)
        if spec.layout is Layout.NCHW:
            self._multiplier, self._bias = self._multiplier.reshape(channels, 1, 1), self._bias.reshape(channels, 1, 1)
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
        image = self._convert_color(np.ascontiguousarray(image), pixel_format)
        resized, transform = self._resize(image)
        return self._tensor(resized), transform

    def _convert_color(self, image: np.ndarray, pixel_format: PixelFormat) -> np.ndarray:
        code = _COLOR_CODES.get((pixel_format, self.spec.color_order))
        if code is None:
            return image
        converted = cv2.cvtColor(image, code)
        return converted[:, :, None] if converted.ndim == 2 else converted

    def _resize(self, image: np.ndarray) -> tuple[np.ndarray, ImageTransform]:
        height, width = image.shape[:2]
        target_w, target_h = self.spec.width, self.spec.height
        mode = self.spec.resize
        if mode is ResizeMode.STRETCH:
            sx, sy = target_w / width, target_h / height
            return self._resized(image, target_w, target_h), ImageTransform(sx, sy, 0.0, 0.0)
        if mode is ResizeMode.LETTERBOX:
            scale = min(target_w / width, target_h / height)
            new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
            if self.spec.letterbox_align is LetterboxAlign.CENTER:
                pad_x, pad_y = (target_w - new_w) // 2, (target_h - new_h) // 2
            else:
                pad_x = pad_y = 0
            fill = (self.spec.letterbox_fill,) * 4
            canvas = cv2.copyMakeBorder(self._resized(image, new_w, new_h), pad_y, target_h - new_h - pad_y, pad_x,
                                        target_w - new_w - pad_x, cv2.BORDER_CONSTANT, value=fill)
            if canvas.ndim == 2:
                canvas = canvas[:, :, None]
            return canvas, ImageTransform(new_w / width, new_h / height, float(pad_x), float(pad_y))
        scale = max(target_w / width, target_h / height)
        new_w, new_h = max(target_w, round(width * scale)), max(target_h, round(height * scale))
        crop_x, crop_y = (new_w - target_w) // 2, (new_h - target_h) // 2
        resized = self._resized(image, new_w, new_h)[crop_y:crop_y + target_h, crop_x:crop_x + target_w]
        return resized, ImageTransform(new_w / width, new_h / height, float(-crop_x), float(-crop_y))

    def _resized(self, image: np.ndarray, width: int, height: int) -> np.ndarray:
        if image.shape[1] == width and image.shape[0] == height:
            return image
        interpolation = self.spec.interpolation
        if interpolation is Interpolation.PIL_BILINEAR:
            plane = image[:, :, 0] if image.shape[2] == 1 else image
            resized = np.asarray(Image.fromarray(plane).resize((width, height), Image.BILINEAR))
        else:
            resized = cv2.resize(image, (width, height), interpolation=_OPENCV_FLAGS[interpolation])
        return resized[:, :, None] if resized.ndim == 2 else resized

    def _tensor(self, pixels: np.ndarray) -> np.ndarray:
        """The HxWxC pixels as a batch of one in the model's layout and dtype, normalised unless uint8."""
        if self.spec.layout is Layout.NCHW:
            pixels = pixels.transpose(2, 0, 1)
        if self._dtype is np.uint8:
            return np.ascontiguousarray(pixels[None])
        tensor = np.empty((1, *pixels.shape), dtype=np.float32)
        np.multiply(pixels, self._multiplier, out=tensor[0])
        np.subtract(tensor[0], self._bias, out=tensor[0])
        return tensor if self._dtype is np.float32 else tensor.astype(self._dtype)
