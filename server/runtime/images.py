"""Image decoding before the graph: what a SavedModel's DecodeJpeg/DecodePng/DecodeImage did.

``onnx-serving convert`` cuts an exported graph's image decoding off at the
signature input (docs/migration.md says why): the converted graph takes decoded
images (a sequence of ``uint8 [height, width, channels]`` for a batch of
encoded images, one such tensor for a single one), and the ONNX file's metadata
says how to decode each input, so the file stays self-describing. Clients still
send the encoded bytes in a DT_STRING tensor; the bytes are decoded here as
TensorFlow's decoders would, errors in TensorFlow's words: JPEGs with
libjpeg-turbo through simplejpeg, with the op's DCT method (TensorFlow's default
is the fast integer one) and fancy upsampling, which gives TensorFlow's pixels
exactly; other formats with Pillow.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from onnx_serving.server.errors import InvalidArgument, ModelLoadError

METADATA_KEY = "onnx_serving.decode_images"
# TensorFlow's decode ops, and the formats each accepts (decode_image: all of them).
_FORMATS = {
    "DecodeJpeg": ("JPEG", "PNG", "GIF"),
    "DecodePng": ("JPEG", "PNG", "GIF"),
    "DecodeImage": ("JPEG", "PNG", "GIF", "BMP", "WEBP"),
    "DecodeBmp": ("BMP",),
    "DecodeGif": ("GIF",),
}
DECODE_OPS = tuple(_FORMATS)
_MODES = {1: "L", 3: "RGB", 4: "RGBA"}
_UNKNOWN_FORMAT = "Unknown image file format. One of JPEG, JPEG XL, PNG, GIF, BMP, WebP required."


@dataclass(frozen=True)
class ImageDecoding:
    """One input's decoding: TensorFlow's op and attributes, and how the graph takes it."""

    op: str
    channels: int = 0  # 0: as the image has them
    ratio: int = 1  # DecodeJpeg's downscaling (libjpeg's DCT scaling)
    expand_animations: bool = True  # DecodeImage: a GIF gives every frame
    batched: bool = True  # a sequence of images for a [N] input; else one image for []
    dct_method: str = ""  # DecodeJpeg's: "" and INTEGER_FAST are the fast integer DCT

    def to_json(self) -> dict[str, object]:
        return {"op": self.op, "channels": self.channels, "ratio": self.ratio,
                "expand_animations": self.expand_animations, "batched": self.batched,
                "dct_method": self.dct_method}

    def decode(self, name: str, array: np.ndarray) -> np.ndarray | list[np.ndarray]:
        """The images of a DT_STRING request tensor, as the graph takes them."""
        if self.batched:
            if array.ndim != 1:
                raise InvalidArgument(
                    f"input '{name}' takes encoded images as a vector, got shape "
                    f"{list(array.shape)}"
                )
            return [self._decode_one(bytes(value)) for value in array]
        if array.ndim != 0:
            raise InvalidArgument(f"contents must be scalar, got shape {list(array.shape)}")
        return self._decode_one(bytes(array.item()))

    def _decode_one(self, data: bytes) -> np.ndarray:
        from PIL import Image, ImageSequence, UnidentifiedImageError

        try:
            image = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise InvalidArgument(_UNKNOWN_FORMAT) from None
        with image:
            kind = image.format or ""
            if kind not in _FORMATS[self.op]:
                raise InvalidArgument(
                    f"Trying to decode {kind} format using a wrong op. Use `decode_"
                    f"{kind.lower()}` or `decode_image` instead. Op used: {self.op}"
                )
            try:
                if kind == "JPEG":
                    return self._jpeg(data)
                if kind == "GIF" and self.op in ("DecodeGif", "DecodeImage") and (
                    self.op == "DecodeGif" or self.expand_animations
                ):
                    return np.stack([self._pixels(f) for f in ImageSequence.Iterator(image)])
                return self._pixels(image)
            except (OSError, ValueError, SyntaxError) as exc:
                if kind == "JPEG":
                    raise InvalidArgument(
                        "jpeg::Uncompress failed. Invalid JPEG data or crop window."
                    ) from exc
                raise InvalidArgument(f"Invalid {kind} data, size {len(data)}: {exc}") from exc

    def _jpeg(self, data: bytes) -> np.ndarray:
        import simplejpeg

        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
        channels = self.channels or (1 if colorspace == "Gray" else 3)
        if channels not in (1, 3):
            raise ValueError(f"JPEG with {channels} channels")
        pixels = simplejpeg.decode_jpeg(
            data, colorspace="GRAY" if channels == 1 else "RGB",
            fastdct=self.dct_method != "INTEGER_ACCURATE", fastupsample=False,
            min_height=-(-height // self.ratio), min_width=-(-width // self.ratio),
        )
        return pixels.reshape(*pixels.shape[:2], channels)

    def _pixels(self, image: object) -> np.ndarray:
        from PIL import Image

        assert isinstance(image, Image.Image)
        mode = _MODES.get(self.channels) or _native_mode(image)
        pixels = np.asarray(image.convert(mode), dtype=np.uint8)
        return pixels[..., np.newaxis] if pixels.ndim == 2 else pixels


def _native_mode(image: object) -> str:
    """channels=0: the image's own channels, palettes expanded as TensorFlow expands them."""
    from PIL import Image

    assert isinstance(image, Image.Image)
    if image.mode in ("L", "1", "I;16", "I"):
        return "L"
    if image.mode == "LA":
        return "LA"
    if image.mode in ("RGBA", "PA") or (image.mode == "P" and "transparency" in image.info):
        return "RGBA"
    return "RGB"


def read_decodings(metadata: Mapping[str, str], file: str) -> dict[str, ImageDecoding]:
    """The inputs an ONNX file says to decode (from its metadata_props)."""
    raw = metadata.get(METADATA_KEY)
    if raw is None:
        return {}
    try:
        entries = json.loads(raw)
        decodings = {name: ImageDecoding(**entry) for name, entry in entries.items()}
    except (ValueError, TypeError) as exc:
        raise ModelLoadError(f"{file}: metadata {METADATA_KEY} is malformed: {exc}") from exc
    unknown = [d.op for d in decodings.values() if d.op not in _FORMATS]
    if unknown:
        raise ModelLoadError(f"{file}: metadata {METADATA_KEY} names unknown ops {unknown}")
    try:
        import PIL  # noqa: F401
        import simplejpeg  # noqa: F401
    except ImportError as exc:
        raise ModelLoadError(
            f"{file} decodes images before its graph ({sorted(decodings)}), which needs "
            f"Pillow and simplejpeg ({exc}): pip install 'onnx-serving[images]'"
        ) from exc
    return decodings
