"""The bundle format: atomic publish, the current pointer, checksums, format version, NaN checks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from index_builder.core import bundle
from index_builder.core.errors import BundleError, ModelFitError


def _fill(folder):
    bundle.save_array(folder, bundle.EMBEDDINGS, np.eye(3, dtype=np.float32))
    (folder / "notes.txt").write_text("hello")
    return {"dataset": "tiny"}


def test_publish_writes_version_manifest_and_current(tmp_path):
    first = bundle.publish(tmp_path, _fill)
    second = bundle.publish(tmp_path, _fill)
    assert first != second and first.parent == tmp_path
    assert (tmp_path / "current").resolve() == second.resolve()
    assert not list(tmp_path.glob(".tmp-*"))
    folder, manifest = bundle.verify(tmp_path)
    assert folder.resolve() == second.resolve()
    assert manifest["format_version"] == bundle.FORMAT_VERSION and manifest["dataset"] == "tiny"
    assert set(manifest["files"]) == {"embeddings.npy", "notes.txt"}
    np.testing.assert_array_equal(bundle.load_array(folder, bundle.EMBEDDINGS), np.eye(3))


def test_failed_build_leaves_no_partial_version(tmp_path):
    bundle.publish(tmp_path, _fill)

    def broken(folder):
        (folder / "half.txt").write_text("x")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        bundle.publish(tmp_path, broken)
    assert len([p for p in tmp_path.iterdir() if not p.name.startswith(".")]) == 2  # one version + current
    bundle.verify(tmp_path)


def test_tampered_file_is_named(tmp_path):
    folder = bundle.publish(tmp_path, _fill)
    (folder / "notes.txt").write_text("changed")
    with pytest.raises(BundleError, match=r"notes\.txt does not match its checksum"):
        bundle.verify(tmp_path)
    (folder / "notes.txt").unlink()
    with pytest.raises(BundleError, match=r"notes\.txt is listed in the manifest but missing"):
        bundle.verify(folder)


def test_other_format_version_is_refused(tmp_path):
    folder = bundle.publish(tmp_path, _fill)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["format_version"] = 99
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=f"bundle format 99, this code reads format {bundle.FORMAT_VERSION}"):
        bundle.verify(tmp_path)


def test_no_bundle_and_nan_arrays(tmp_path):
    with pytest.raises(BundleError, match="holds no bundle"):
        bundle.resolve(tmp_path)
    with pytest.raises(ModelFitError, match=r"als_item_factors\.npy has 1 non-finite values \(first rows \[1\]\)"):
        bundle.save_array(tmp_path, bundle.ITEM_FACTORS, np.array([[1.0], [np.nan]], dtype=np.float32))


def test_two_publishes_in_one_second_both_land(tmp_path):
    """Two builds into one root finishing in the same second: the second used to fail after all its work
    (``Directory not empty``); now each gets its own version."""
    inner = []

    def slow_fill(folder):
        inner.append(bundle.publish(tmp_path, _fill))  # another build lands while this one writes
        return _fill(folder)

    outer = bundle.publish(tmp_path, slow_fill)
    assert outer != inner[0] and outer.is_dir() and inner[0].is_dir()
    assert bundle.read_manifest(outer)["version"] == outer.name
    assert (tmp_path / "current").resolve() == outer.resolve()
    bundle.verify(outer)
    bundle.verify(inner[0])
