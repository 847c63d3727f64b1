"""In-memory splits, batching, one-hot labels and the loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from convkit.data import Batches, Split, holdout_split, to_categorical


def split(n=10):
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    return Split(images, torch.arange(n) % 3)


def test_holdout_is_the_last_fraction_as_keras():
    train, val = holdout_split(split(10), 0.2)
    assert train.labels.tolist() == [0, 1, 2, 0, 1, 2, 0, 1]
    assert val.images[:, 0, 0, 0].tolist() == [8, 9]
    with pytest.raises(ValueError, match="received val_split=1.0"):
        holdout_split(split(), 1.0)


def test_batches_cover_every_sample_once_in_float():
    g = torch.Generator().manual_seed(0)
    batches = Batches(split(10), 4, shuffle=True, generator=g)
    seen = list(batches)
    assert len(batches) == 3 and [len(y) for _, y in seen] == [4, 4, 2]
    values = torch.cat([x[:, 0, 0, 0] for x, _ in seen]) * 255
    assert sorted(values.round().long().tolist()) == list(range(10))
    assert seen[0][0].dtype == torch.float32 and 0 <= float(seen[0][0].min()) <= 1
    # labels travel with their images
    for x, y in seen:
        assert ((x[:, 0, 0, 0] * 255).round().long() % 3 == y).all()


def test_batches_shuffle_differs_per_epoch_and_drop_last():
    g = torch.Generator().manual_seed(0)
    b = Batches(split(10), 4, shuffle=True, generator=g, drop_last=True)
    first = torch.cat([y for _, y in b])
    assert len(b) == 2 and len(first) == 8
    orders = {tuple(torch.cat([x[:, 0, 0, 0] for x, _ in b]).tolist()) for _ in range(5)}
    assert len(orders) > 1


def test_to_categorical_as_the_lecture():
    assert to_categorical([0, 2, 1], 3).tolist() == [[1, 0, 0], [0, 0, 1], [0, 1, 0]]
    with pytest.raises(ValueError, match=r"expected labels in 0..9, received values from 0 to 10"):
        to_categorical([0, 10], 10)
    with pytest.raises(ValueError, match="integer class labels"):
        to_categorical(torch.tensor([0.5]), 10)


def test_categorical_crossentropy_on_one_hot_equals_index_targets():
    torch.manual_seed(0)
    logits, labels = torch.randn(6, 10), torch.randint(0, 10, (6,))
    one_hot = to_categorical(labels, 10)
    expected = -(one_hot * logits.log_softmax(1)).sum(1).mean()  # the textbook formula
    assert torch.allclose(F.cross_entropy(logits, one_hot), expected)
    assert torch.allclose(F.cross_entropy(logits, labels), expected)


def test_label_smoothing_is_the_mixed_target():
    torch.manual_seed(0)
    logits, labels = torch.randn(6, 10), torch.randint(0, 10, (6,))
    eps = 0.1
    soft = to_categorical(labels, 10) * (1 - eps) + eps / 10
    expected = -(soft * logits.log_softmax(1)).sum(1).mean()
    loss = torch.nn.CrossEntropyLoss(label_smoothing=eps)
    assert torch.allclose(loss(logits, labels), expected)


def wide_split(n):
    """Image i holds i in two bytes (i // 256, i % 256): rows stay identifiable past 255."""
    rows = torch.arange(n)
    images = torch.stack([rows // 256, rows % 256], 1).to(torch.uint8).view(n, 1, 1, 2)
    return Split(images, rows % 7)


def rows_of(x):
    pixels = (x * 255).round().long()
    return (pixels[:, 0, 0, 0] * 256 + pixels[:, 0, 0, 1]).tolist()


def epoch_rows(batches):
    return [rows_of(x) for x, _ in batches]


def test_windowed_shuffle_reads_every_row_once_in_windows_of_whole_blocks():
    n, rows, block = 992, 200, 16  # 62 whole blocks: windows of 12 blocks, then 2
    b = Batches(
        wide_split(n),
        50,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
        window=(rows, block),
    )  # fmt: skip  (batches of 50 against windows of 192: some batches span two windows)
    assert b.windowed()
    first = epoch_rows(b)
    flat = [r for batch in first for r in batch]
    assert sorted(flat) == list(range(n)) and len(first) == len(b) == 20
    # each run of `rows` samples (a window) is made of whole blocks: 12 blocks of 16 = 192 rows
    per = (rows // block) * block
    for w in range(0, n, per):
        chunk = flat[w : w + per]
        blocks = {r // block for r in chunk}
        whole = len(blocks) * block
        assert whole == len(chunk), f"window at {w} holds part of a block"
    # labels travel with their rows, and the next epoch is another order
    for x, y in b:
        assert [r % 7 for r in rows_of(x)] == y.tolist()
    assert epoch_rows(b) != first


def test_a_window_as_large_as_the_split_is_the_plain_shuffle():
    plain = Batches(wide_split(300), 32, shuffle=True, generator=torch.Generator().manual_seed(3))
    whole = Batches(
        wide_split(300), 32, shuffle=True, generator=torch.Generator().manual_seed(3),
        window=(300, 8),
    )  # fmt: skip
    assert not whole.windowed()
    assert epoch_rows(plain) == epoch_rows(whole)


def test_windowed_shards_split_each_global_batch_between_processes():
    def batches(rank, world):
        return Batches(
            wide_split(500), 40, shuffle=True, generator=torch.Generator().manual_seed(1),
            window=(100, 10), shard=(rank, world),
        )  # fmt: skip

    one = epoch_rows(batches(0, 1))
    parts = [epoch_rows(batches(r, 2)) for r in range(2)]
    assert [a + b for a, b in zip(*parts, strict=True)] == one


def test_windowed_batches_go_to_the_device_asked_and_refuse_an_empty_window():
    b = Batches(
        wide_split(100), 10, shuffle=True, generator=torch.Generator().manual_seed(0),
        window=(30, 5), device="meta",
    )  # fmt: skip
    x, y = next(iter(b))
    assert x.device.type == "meta" and y.device.type == "meta"
    with pytest.raises(ValueError, match=r"received window=\(0, 5\)"):
        Batches(wide_split(10), 2, window=(0, 5))
