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
    size: int  # bytes
    md5: str  # the checksum most loaders publish
    sha256: str  # the checksum convkit verifies (md5 is checked too after a download)


@dataclass(frozen=True)
class DatasetSpec:
    name: str  # the name used on the command line and in recipes
    title: str
    folder: str  # sub-folder of a data root that holds the files, e.g. <root>/mnist/
    format: str  # parser that turns the files into arrays (see convkit.data.formats)
    files: tuple[FileSpec, ...]
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

    def file(self, name: str) -> FileSpec:
        for f in self.files:
            if f.name == name:
                return f
        raise KeyError(f"{self.name} has no file {name!r}")


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
        folder="mnist",
        format="idx",
        files=(
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
        folder="fashion-mnist",
        format="idx",
        files=(
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
