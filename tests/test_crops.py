"""Points stay a fixed annotation: over one pass the network sees every point exactly once, no more."""

import numpy as np
import torch

from pointseg.data.crops import CropSampler, crop_padded, d4
from pointseg.points import sample_points


def _scenes(seed=0):
    rng = np.random.default_rng(seed)
    images, targets = [], []
    for h, w in [(100, 130), (64, 64), (150, 90)]:
        mask = rng.integers(0, 4, (h, w)).astype(np.uint8)
        pts = sample_points(mask, 6, "class_balanced", seed=int(rng.integers(1e6)))
        # the image encodes each pixel's own coordinates, to check that points move with the image
        yy, xx = np.mgrid[:h, :w]
        img = np.stack([yy % 256, xx % 256, (yy * w + xx) % 251], -1).astype(np.uint8)
        images.append(img)
        targets.append(pts)
    return images, targets


def test_one_pass_sees_exactly_the_budget():
    images, targets = _scenes()
    budget = sum(int((t != 255).sum()) for t in targets)
    s = CropSampler(images, targets, crop_size=48, batch_size=1, seed=5, augment=True)
    n = len(s.windows(0))
    seen = 0
    classes = []
    for _, (x, y) in zip(range(n), s.batches()):
        seen += int((y != 255).sum())
        classes += y[y != 255].tolist()
    assert seen == budget  # no point created, duplicated or dropped
    assert sorted(classes) == sorted(np.concatenate([t[t != 255] for t in targets]).tolist())


def test_points_move_with_the_image_under_augmentation():
    images, targets = _scenes(1)
    s = CropSampler(images, targets, crop_size=40, batch_size=1, seed=2, augment=True)
    lookup = {}
    for img, t in zip(images, targets):
        for r, c in zip(*np.nonzero(t != 255)):
            lookup[tuple(img[r, c])] = t[r, c]
    checked = 0
    for p, n, (img, tgt) in s.passes():
        if p > 0:
            break
        for r, c in zip(*np.nonzero(tgt != 255)):
            assert lookup[tuple(img[r, c])] == tgt[r, c]  # the pixel under the point is the one it was clicked on
            checked += 1
    assert checked == sum(int((t != 255).sum()) for t in targets)


def test_passes_differ_and_are_reproducible():
    images, targets = _scenes()
    a = CropSampler(images, targets, 48, 2, seed=1)
    b = CropSampler(images, targets, 48, 2, seed=1)
    assert a.windows(0) == b.windows(0) and a.windows(0) != a.windows(1)
    xa, ya = next(a.batches(skip_samples=3))
    # fast-forwarding by skip_samples gives the same stream as drawing those samples
    stream = b.passes()
    for _ in range(3):
        next(stream)
    imgs = [next(stream)[2][0], next(stream)[2][0]]
    assert torch.equal(xa, torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 255)


def test_empty_windows_are_skipped_unless_asked():
    images, targets = _scenes()
    sparse = [np.full_like(t, 255) for t in targets]
    sparse[0][5, 5] = 1
    s = CropSampler(images, sparse, 32, 1, seed=0)
    assert len(s.windows(0)) == 1
    assert len(CropSampler(images, sparse, 32, 1, seed=0, skip_empty=False).windows(0)) > 1


def test_d4_and_padding():
    a = np.arange(12).reshape(3, 4)
    assert len({d4(a, k).tobytes() + bytes(d4(a, k).shape) for k in range(8)}) == 8
    out = crop_padded(a, -1, 2, 3, -7)
    assert out.tolist() == [[-7, -7, -7], [2, 3, -7], [6, 7, -7]]


def test_diagnostic_masks_move_with_the_crops_and_change_nothing_else():
    images, targets = _scenes()
    dense = [np.where(t == 255, 3, t) for t in targets]  # any label map the size of its image
    plain = CropSampler(images, targets, 40, 2, seed=3)
    diag = CropSampler(images, targets, 40, 2, seed=3, diagnostic=dense)
    for _, (x, y), (x2, y2, d) in zip(range(6), plain.batches(), diag.batches()):
        assert torch.equal(x, x2) and torch.equal(y, y2)  # same crops, same targets, same order
        labelled = y != 255
        assert torch.equal(d[labelled], y[labelled])  # the dense crop lies under the points, moved alike


def test_staged_batches_switch_crop_size_after_their_steps_and_resume_where_they_stopped():
    from pointseg.data.crops import staged_batches

    images, targets = _scenes()
    def stages():
        return [(CropSampler(images, targets, 32, 2, seed=4), 3), (CropSampler(images, targets, 64, 2, seed=4), None)]

    whole = [b for _, b in zip(range(7), staged_batches(stages()))]
    assert [x.shape[-1] for x, _ in whole] == [32, 32, 32, 64, 64, 64, 64]
    # the last stage is the 64 px sampler's own stream from its start, whatever came before
    alone = [b for _, b in zip(range(4), CropSampler(images, targets, 64, 2, seed=4).batches())]
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(whole[3:], alone))
    for start in range(7):  # a run resumed at any step draws what the unbroken run drew from there on
        resumed = [b for _, b in zip(range(7 - start), staged_batches(stages(), start_step=start))]
        assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(whole[start:], resumed))
        assert len(resumed) == 7 - start
