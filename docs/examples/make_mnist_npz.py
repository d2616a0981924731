"""Write MNIST as KerasTuner's getting-started guide prepares it: images scaled to [0, 1] with a
channel axis, one-hot labels. ``python make_mnist_npz.py OUT.npz [N [T]]`` (N: the first N training
images, T: the first T test images, N // 6 when only N is given; all by default). Reads
``$HPSEARCH_DATA`` or Keras's download."""

import os
import sys

import numpy as np


def main(out: str, n: int | None = None, test: int | None = None) -> None:
    source = os.environ.get("HPSEARCH_DATA")
    if source:
        with np.load(source) as f:
            (x_train, y_train), (x_test, y_test) = (f["x_train"], f["y_train"]), (f["x_test"], f["y_test"])
    else:
        import keras

        (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
    if n is not None:
        x_train, y_train = x_train[:n], y_train[:n]
        test = max(1, n // 6) if test is None else test
    if test is not None:
        x_test, y_test = x_test[:test], y_test[:test]
    eye = np.eye(10, dtype="float32")
    np.savez(out, x_train=(x_train[..., None] / 255.0).astype("float32"), y_train=eye[y_train],
             x_test=(x_test[..., None] / 255.0).astype("float32"), y_test=eye[y_test])


if __name__ == "__main__":
    main(sys.argv[1], *(int(a) for a in sys.argv[2:4]))
