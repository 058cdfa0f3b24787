import numpy as np
import pytest
from PIL import Image

from segdeploy.engine.finder import find_images

from segdeploy.engine.images import ImageReadError, read_image
from segdeploy.engine.writers import atomic_write_bytes, write_png
from segdeploy.tasks import voc_palette
from tests.image_zoo import exif_rotated_jpeg, make_mixed_folder, photo


def test_good_files_read_as_displayed_rgb(tmp_path):
    zoo = make_mixed_folder(tmp_path)
    for rel, (height, width) in zoo["good"].items():
        image = read_image(tmp_path / rel)
        assert image.dtype == np.uint8 and image.shape == (height, width, 3), rel


@pytest.mark.parametrize("name, words", [("truncated.jpg", "truncated"), ("notes.png", "not an image"),
                                         ("empty.jpg", "empty")])
def test_bad_files_raise_with_name_and_reason(tmp_path, name, words):
    make_mixed_folder(tmp_path)
    with pytest.raises(ImageReadError) as info:
        read_image(tmp_path / name)
    assert name in str(info.value) and words in info.value.reason


def test_exif_orientation_applied(tmp_path):
    displayed = exif_rotated_jpeg(tmp_path / "r.jpg", height=30, width=50)
    stored = np.asarray(Image.open(tmp_path / "r.jpg"))
    image = read_image(tmp_path / "r.jpg")
    assert image.shape[:2] == displayed == (50, 30)
    # orientation 6 = rotate 90° clockwise to display: displayed[r, c] = stored[H-1-c, r]
    assert np.abs(image.astype(int) - np.rot90(stored, k=-1).astype(int)).mean() < 1.0


def test_sixteen_bit_scaled_to_eight(tmp_path):
    values = np.array([[0, 257 * 100, 65535]], np.uint16)
    Image.fromarray(values).save(tmp_path / "d.png")
    assert read_image(tmp_path / "d.png")[0, :, 0].tolist() == [0, 100, 255]


def test_find_images_expands_folders_globs_and_keeps_named_files(tmp_path):
    make_mixed_folder(tmp_path)
    (tmp_path / "readme.txt").write_text("x")
    flat = {rel.as_posix() for _, rel in find_images([tmp_path])}
    deep = {rel.as_posix() for _, rel in find_images([tmp_path], recursive=True)}
    assert "readme.txt" not in flat and "sub/naïve 图像.png" not in flat
    assert "sub/naïve 图像.png" in deep and "notes.png" in deep
    assert {rel.as_posix() for _, rel in find_images([str(tmp_path / "*.jpg")])} == \
        {"plain.jpg", "cmyk.jpg", "rotated.jpg", "truncated.jpg", "empty.jpg"}
    assert [rel.as_posix() for _, rel in find_images([tmp_path / "readme.txt"])] == ["readme.txt"]
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        find_images([tmp_path / "nothing-here"])


def test_atomic_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "out" / "m.png"
    write_png(target, photo(5, 6)[:, :, 0])
    before = target.read_bytes()

    with pytest.raises(TypeError):
        atomic_write_bytes(target, object())  # fails while writing
    assert target.read_bytes() == before
    assert [p.name for p in target.parent.iterdir()] == ["m.png"]


def test_palette_png_keeps_class_ids(tmp_path):
    ids = np.array([[0, 15, 255], [1, 20, 3]], np.uint8)
    write_png(tmp_path / "s.png", ids, palette=voc_palette())
    img = Image.open(tmp_path / "s.png")
    assert img.mode == "P" and np.array_equal(np.asarray(img), ids)
    assert img.getpalette()[15 * 3:15 * 3 + 3] == [192, 128, 128]  # VOC 'person'


def test_written_files_get_normal_permissions(tmp_path):
    import os

    target = write_png(tmp_path / "p.png", photo(4, 4)[:, :, 0])
    mask = os.umask(0)
    os.umask(mask)
    assert (target.stat().st_mode & 0o777) == (0o666 & ~mask)


def test_a_closed_publish_gate_keeps_later_writes_off_disk(tmp_path):
    """An interrupted run closes its gate before recording what it wrote: a worker finishing a
    write afterwards must not put a file on disk that the record does not know."""
    import threading

    from segdeploy.engine.writers import PublishGate, WritesClosed

    gate = PublishGate()
    with gate.publishing():
        atomic_write_bytes(tmp_path / "before.png", b"kept")
    gate.close()

    raised = []

    def late_write():
        try:
            with gate.publishing():
                atomic_write_bytes(tmp_path / "after.png", b"too late")
        except WritesClosed as exc:
            raised.append(exc)

    worker = threading.Thread(target=late_write)
    worker.start()
    worker.join()
    assert len(raised) == 1 and "after.png" in str(raised[0])
    assert (tmp_path / "before.png").read_bytes() == b"kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["before.png"]  # no file, no temporary left
    atomic_write_bytes(tmp_path / "ungated.png", b"other runs still write")
    assert (tmp_path / "ungated.png").is_file()
