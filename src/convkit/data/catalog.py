"""Datasets declared as data: files with sizes and checksums, official mirrors, classes, image shape.

Adding a dataset is a matter of declaring a `DatasetSpec` here (and, for a new file format,
a parser in `convkit.data.formats`).
"""

from __future__ import annotations

from dataclasses import dataclass

from convkit.errors import ConfigError


@dataclass(frozen=True)
class FileSpec:
    """One published file, as its authors distribute it."""

    name: str  # file name on the mirrors and on disk
    size: int | None  # bytes; None where no reference size is published
    md5: str  # the checksum most loaders publish
    sha256: str | None  # verified when known (md5 is checked too); None: md5 only


@dataclass(frozen=True)
class Source:
    """One way a dataset is distributed: a set of files in a folder, maybe packed in an archive."""

    folder: str  # sub-folder of a data root that holds the files, e.g. <root>/mnist/
    format: str  # parser that turns the files into arrays (see convkit.data.formats)
    files: tuple[FileSpec, ...]
    archive: FileSpec | None = None  # an archive whose extraction yields `folder`/`files`
    archive_folder: str = ""  # sub-folder of a data root where the archive is kept and unpacked


@dataclass(frozen=True)
class DatasetSpec:
    name: str  # the name used on the command line and in recipes
    title: str
    sources: tuple[Source, ...]  # tried in order; a download fetches the first one
    mirrors: tuple[str, ...]  # base URLs tried in order; a file's URL is mirror + file name
    classes: tuple[str, ...]
    image_shape: tuple[int, int, int]  # (C, H, W)
    train_size: int
    test_size: int
    homepage: str
    citation: str

    @property
    def num_classes(self) -> int:
        return len(self.classes)


_DATASETS: dict[str, DatasetSpec] = {}


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Declare a dataset; a second declaration of the same name is an error."""
    if spec.name in _DATASETS:
        raise ValueError(f"dataset {spec.name!r} is already registered")
    _DATASETS[spec.name] = spec
    return spec


def get_dataset_spec(name: str) -> DatasetSpec:
    try:
        return _DATASETS[name]
    except KeyError:
        known = ", ".join(sorted(_DATASETS))
        raise ConfigError(f"unknown dataset {name!r}; known datasets: {known}") from None


def list_datasets() -> list[str]:
    return sorted(_DATASETS)


MNIST = register_dataset(
    DatasetSpec(
        name="mnist",
        title="MNIST handwritten digits",
        sources=(
            Source(
                "mnist",
                "idx",
                (
                    FileSpec(
                        "train-images-idx3-ubyte.gz",
                        9912422,
                        "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                    ),
                    FileSpec(
                        "train-labels-idx1-ubyte.gz",
                        28881,
                        "d53e105ee54ea40749a09fcbcd1e9432",
                        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                    ),
                    FileSpec(
                        "t10k-images-idx3-ubyte.gz",
                        1648877,
                        "9fb629c4189551a2d022fa330f9573f3",
                        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                    ),
                    FileSpec(
                        "t10k-labels-idx1-ubyte.gz",
                        4542,
                        "ec29112dd5afa0611ce80d1b7f02629c",
                        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                    ),
                ),
            ),
        ),
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        classes=tuple(str(d) for d in range(10)),
        image_shape=(1, 28, 28),
        train_size=60000,
        test_size=10000,
        homepage="http://yann.lecun.com/exdb/mnist/",
        citation="LeCun, Bottou, Bengio, Haffner. Gradient-based learning applied to document "
        "recognition. Proc. IEEE 86(11), 1998.",
    )
)

FASHION_MNIST = register_dataset(
    DatasetSpec(
        name="fashion-mnist",
        title="Fashion-MNIST (Zalando article images)",
        sources=(
            Source(
                "fashion-mnist",
                "idx",
                (
                    FileSpec(
                        "train-images-idx3-ubyte.gz",
                        26421880,
                        "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                        "08dc20ab1689590a0bcd66e874647b6ee8464e2d501b5a3f1f78831db19a3fdc",
                    ),
                    FileSpec(
                        "train-labels-idx1-ubyte.gz",
                        29515,
                        "25c81989df183df01b3e8a0aad5dffbe",
                        "b0197879cbda89f3dc7b894f9fd52b858e68ea4182b6947c9d8c2b67e5f18dcc",
                    ),
                    FileSpec(
                        "t10k-images-idx3-ubyte.gz",
                        4422102,
                        "bef4ecab320f06d8554ea6380940ec79",
                        "78dcbbfb5a27efaf1b6c1d616caca68560be8766c5bffcb2791df9273a534229",
                    ),
                    FileSpec(
                        "t10k-labels-idx1-ubyte.gz",
                        5148,
                        "bb300cfdad3c16e7a12a480ee83cd310",
                        "42bd18137a62d5998cdeae52bf3a0676ac6b706f5cf8439b47bb5b151ae3dccf",
                    ),
                ),
            ),
        ),
        mirrors=(
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        ),
        classes=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        image_shape=(1, 28, 28),
        train_size=60000,
        test_size=10000,
        homepage="https://github.com/zalandoresearch/fashion-mnist",
        citation="Xiao, Rasul, Vollgraf. Fashion-MNIST: a Novel Image Dataset for Benchmarking "
        "Machine Learning Algorithms. arXiv:1708.07747, 2017.",
    )
)

_CIFAR10_BIN = Source(
    folder="cifar-10/cifar-10-batches-bin",
    format="cifar-bin",
    files=(
        FileSpec(
            "data_batch_1.bin",
            30730000,
            "5dd7e06a14cb22eb9f671a540d1b7c25",
            "cee916563c9f80d84e3cc88e17fdc0941787f1244f00a67874d45b261883ada5",
        ),
        FileSpec(
            "data_batch_2.bin",
            30730000,
            "5ea93a67294ea407fff1d09f752e9692",
            "a591ca11fa1708a91ee40f54b3da4784ccd871ecf2137de63f51ada8b3fa57ed",
        ),
        FileSpec(
            "data_batch_3.bin",
            30730000,
            "942cd6a4bcdd0dd3c604fbe906cb4421",
            "bbe8596564c0f86427f876058170b84dac6670ddf06d79402899d93ceea26f67",
        ),
        FileSpec(
            "data_batch_4.bin",
            30730000,
            "ae636b3ba5c66a11e91e8cb52e771fcb",
            "014e562d6e23c72197cc727519169a60359f5eccd8945ad5a09d710285ff4e48",
        ),
        FileSpec(
            "data_batch_5.bin",
            30730000,
            "53f37980c15c3d472c316c40844f3f0d",
            "755304fc0b379caeae8c14f0dac912fbc7d6cd469eb67a1029a08a39453a9add",
        ),
        FileSpec(
            "test_batch.bin",
            30730000,
            "803d5f7f4d78ea53de84dbe85f74fb6d",
            "8e2eb146ae340b09e24670f29cabc6326dba54da8789dab6768acf480273f65b",
        ),
        # batches.meta.txt (the class names) is read when present and checked by its content,
        # not by checksum: copies of it differ in trailing blank lines.
    ),
    archive=FileSpec(
        "cifar-10-binary.tar.gz",
        170052171,
        "c32a1d4ab5d03f1284b67883e8d87530",
        "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
    ),
    archive_folder="cifar-10",
)

# The python version: pickles, read by a restricted unpickler (convkit.data.cifar). No SHA-256
# of the extracted files is published; their MD5s are the ones other loaders check.
_CIFAR10_PY = Source(
    folder="cifar-10/cifar-10-batches-py",
    format="cifar-py",
    files=(
        FileSpec("data_batch_1", None, "c99cafc152244af753f735de768cd75f", None),
        FileSpec("data_batch_2", None, "d4bba439e000b95fd0a9bffe97cbabec", None),
        FileSpec("data_batch_3", None, "54ebc095f3ab1f0389bbae665268c751", None),
        FileSpec("data_batch_4", None, "634d18415352ddfa80567beed471001a", None),
        FileSpec("data_batch_5", None, "482c414d41f54cd18b22e5b47cb7c3cb", None),
        FileSpec(
            "test_batch",
            31035526,
            "40351d587109b95175f43aff81a1287e",
            "f53d8d457504f7cff4ea9e021afcf0e0ad8e24a91f3fc42091b8adef61157831",
        ),
        FileSpec("batches.meta", None, "5ff9c542aee3614f3951f8cda6e48888", None),
    ),
    archive=FileSpec(
        "cifar-10-python.tar.gz",
        170498071,
        "c58f30108f718f92721af3b95e74349a",
        "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
    ),
    archive_folder="cifar-10",
)

CIFAR10 = register_dataset(
    DatasetSpec(
        name="cifar10",
        title="CIFAR-10 tiny colour images",
        sources=(_CIFAR10_BIN, _CIFAR10_PY),
        mirrors=("https://www.cs.toronto.edu/~kriz/",),
        classes=(
            "airplane",
            "automobile",
            "bird",
            "cat",
            "deer",
            "dog",
            "frog",
            "horse",
            "ship",
            "truck",
        ),
        image_shape=(3, 32, 32),
        train_size=50000,
        test_size=10000,
        homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
        citation="Krizhevsky. Learning Multiple Layers of Features from Tiny Images. "
        "Technical report, University of Toronto, 2009.",
    )
)
