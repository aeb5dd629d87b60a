"""How far each JPEG decoder is from TensorFlow's, and what the converted model answers.

    .venv/bin/python bench/jpeg_decoding.py [--images=30]

Decoders against tf.io.decode_jpeg (default and INTEGER_ACCURATE DCT): max and
mean absolute pixel difference over generated 4:2:0 JPEGs of varied sizes. Then the
test suite's JPEG classifier, converted with ``onnx-serving convert`` and run as
the server runs it, against TensorFlow: max abs difference of probabilities and
top-1 agreement.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import onnx_serving.migration  # noqa: F401  (onnxruntime-extensions before TensorFlow)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=30)
    args = parser.parse_args()
    import io

    import simplejpeg
    import tensorflow as tf
    from PIL import Image

    from tests import tf_op_models

    images = tf_op_models.jpegs(args.images, seed=11)
    decoders = {
        "simplejpeg fast DCT (server, default)": lambda d: simplejpeg.decode_jpeg(
            d, colorspace="RGB", fastdct=True, fastupsample=False),
        "simplejpeg accurate DCT (server, INTEGER_ACCURATE)": lambda d: simplejpeg.decode_jpeg(
            d, colorspace="RGB", fastdct=False, fastupsample=False),
        "Pillow": lambda d: np.asarray(Image.open(io.BytesIO(d)).convert("RGB")),
    }
    references = {
        "default": lambda d: tf.io.decode_jpeg(d, channels=3),
        "INTEGER_ACCURATE": lambda d: tf.io.decode_jpeg(d, channels=3,
                                                        dct_method="INTEGER_ACCURATE"),
    }
    print(f"| decoder | vs TF {' | vs TF '.join(references)} |")
    print("| --- |" + " --- |" * len(references))
    for name, decode in decoders.items():
        cells = []
        for reference in references.values():
            diffs = [np.abs(decode(d).astype(int) - reference(d).numpy().astype(int))
                     for d in images]
            cells.append(f"max {max(int(x.max()) for x in diffs)}, "
                         f"mean {np.mean([x.mean() for x in diffs]):.3f}")
        print(f"| {name} | {' | '.join(cells)} |")

    from onnx_serving.migration.served_session import ServedSession

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        tf_op_models.jpeg_classifier(root / "saved" / "1")
        subprocess.run([sys.executable, "-m", "onnx_serving.server", "convert",
                        str(root / "saved"), str(root / "onnx")], check=True,
                       capture_output=True)
        session = ServedSession(root / "onnx" / "1" / "model.onnx")
        signature = tf.saved_model.load(str(root / "saved" / "1")).signatures["serving_default"]
        worst, agree = 0.0, 0
        for data in images:
            batch = np.array([data], dtype=object)
            got = session.run(["probabilities"], {"image_bytes": batch})[0]
            want = signature(image_bytes=tf.constant(batch))["probabilities"].numpy()
            worst = max(worst, float(np.abs(got - want).max()))
            agree += int(np.argmax(got) == np.argmax(want))
        print(f"\nconverted JPEG classifier, {len(images)} JPEGs: max abs difference of "
              f"probabilities {worst:.3g}, top-1 agreement {agree}/{len(images)}")


if __name__ == "__main__":
    main()
