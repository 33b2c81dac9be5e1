#!/usr/bin/python3
"""Build the image demo set: Fashion-MNIST (Debian's dataset-fashion-mnist)
as JPEG files in class-named directories, OUT/{train,test}/<class>/<index>.jpg.

The first N images of each class in file order are taken, so the set is the
same on every machine; <index> is the image's position in the original file.

    /usr/bin/python3 scripts/make_fmnist.py --out data/fmnist [--train-per-class 500] [--test-per-class 100]
"""
import argparse
import gzip
import os
import struct

from PIL import Image

SOURCE = "/usr/share/datasets/fashion-mnist"
NAMES = ["tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]


def idx_file(path):
    """An IDX file: big-endian magic (type, rank), then the dimensions, then bytes."""
    raw = gzip.open(path, "rb").read()
    rank = raw[3]
    dims = struct.unpack(">%dI" % rank, raw[4:4 + 4 * rank])
    return dims, raw[4 + 4 * rank:]


def write_split(out, stem, per_class):
    (count, height, width), pixels = idx_file(os.path.join(SOURCE, stem + "-images-idx3-ubyte.gz"))
    (_,), labels = idx_file(os.path.join(SOURCE, stem + "-labels-idx1-ubyte.gz"))
    taken = [0] * len(NAMES)
    for i in range(count):
        label = labels[i]
        if taken[label] >= per_class:
            continue
        taken[label] += 1
        folder = os.path.join(out, "%d_%s" % (label, NAMES[label]))
        os.makedirs(folder, exist_ok=True)
        size = height * width
        image = Image.frombytes("L", (width, height), pixels[i * size:(i + 1) * size])
        image.save(os.path.join(folder, "%05d.jpg" % i), quality=95)
    return sum(taken)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="data/fmnist")
    parser.add_argument("--train-per-class", type=int, default=500)
    parser.add_argument("--test-per-class", type=int, default=100)
    args = parser.parse_args()
    n_train = write_split(os.path.join(args.out, "train"), "train", args.train_per_class)
    n_test = write_split(os.path.join(args.out, "test"), "t10k", args.test_per_class)
    print("wrote %d train and %d test images under %s" % (n_train, n_test, args.out))


if __name__ == "__main__":
    main()
