"""Dataset files read without network access: checksums, IDX images and labels; a DataError names each problem."""

import hashlib
from pathlib import Path

import numpy as np

from ddpm_signrelu.errors import DataError

REFETCH = ("delete it, then copy the original file there again or set data.init_args.download: true on a machine "
           "with internet access")


def check_md5(path: Path, data: bytes, md5: str, fix: str = REFETCH) -> bytes:
    """``data``, the bytes of ``path``, if their MD5 checksum is ``md5``; else a DataError naming ``path``."""
    got = hashlib.md5(data).hexdigest()
    if got != md5:
        raise DataError(f"{path} is corrupt (checksum mismatch: MD5 expected {md5}, got {got}); {fix}")
    return data


def idx_images(data: bytes, path: Path, fix: str, size: tuple[int, int]) -> np.ndarray:
    """(N, H, W) uint8 images, (H, W) = ``size``, from the bytes of an IDX file (MNIST's format: the magic
    0x00000803, then N, H, W big-endian, then N·H·W bytes); else a DataError naming ``path``."""
    if len(data) < 16 or data[:4] != b"\x00\x00\x08\x03":
        problem = "its header is not that of uint8 images in 3 dimensions (magic 0x00000803)"
    else:
        n, h, w = (int.from_bytes(data[i:i + 4], "big") for i in (4, 8, 12))
        if (h, w) != size:
            problem = f"its header gives images of {h}x{w}, not {size[0]}x{size[1]}"
        elif len(data) != 16 + n * h * w:
            problem = f"its header gives {n} images, {n * h * w} bytes, but {len(data) - 16} follow (truncated?)"
        else:
            return np.frombuffer(data, np.uint8, offset=16).reshape(n, h, w).copy()
    raise DataError(f"{path} is not a valid IDX image file of shape (N, {size[0]}, {size[1]}): {problem}; {fix}")


def idx_labels(data: bytes, path: Path, fix: str) -> np.ndarray:
    """(N,) uint8 labels from an IDX label file (magic 0x00000801, N big-endian, N bytes); else a DataError."""
    if len(data) < 8 or data[:4] != b"\x00\x00\x08\x01":
        problem = "its header is not that of uint8 labels in 1 dimension (magic 0x00000801)"
    elif len(data) != 8 + int.from_bytes(data[4:8], "big"):
        problem = f"its header gives {int.from_bytes(data[4:8], 'big')} labels but {len(data) - 8} bytes follow"
    else:
        return np.frombuffer(data, np.uint8, offset=8).copy()
    raise DataError(f"{path} is not a valid IDX label file: {problem}; {fix}")
