"""DistortedMNIST: the Dataset protocol, metadata, the on-disk cache and its invalidation."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from stnkit.data import VARIANTS, DistortedMNIST, cached_datasets, distort, load_mnist
from stnkit.data import datasets as datasets_module
from stnkit.data import distortions as distortions_module


def _make(tmp_path, variant="R", **kwargs):
    kwargs.setdefault("root", "embedded")
    kwargs.setdefault("progress", False)
    return DistortedMNIST(variant, "test", cache=tmp_path, **kwargs)


@pytest.fixture
def count_generations(monkeypatch):
    calls = []
    real = datasets_module._generate

    def counting(*args, **kwargs):
        calls.append(args[:3])
        return real(*args, **kwargs)

    monkeypatch.setattr(datasets_module, "_generate", counting)
    return calls


def _entries(directory):
    return sorted(p.name for p in directory.iterdir())


# --------------------------------------------------------------------------- protocol


def test_dataset_protocol(tmp_path):
    ds = _make(tmp_path, "RTS")
    x, y = load_mnist("test", root="embedded")
    assert len(ds) == len(x) and ds.num_classes == 10 and ds.image_size == (1, 42, 42)
    image, label = ds[5]
    assert image.dtype == torch.float32 and image.shape == (1, 42, 42)
    assert 0 <= image.min() and image.max() <= 1 and image.max() > 0.5
    assert isinstance(label, int) and label == int(y[5])
    assert torch.equal(ds[-1][0], ds[len(ds) - 1][0])
    assert torch.equal(ds[np.int64(7)][0], ds[7][0]) and torch.equal(ds[torch.tensor(7)][0],
                                                                    ds[7][0])
    # values are the stored bytes / 255
    assert torch.equal(image * 255, ds.data[5].float())
    assert torch.equal(ds.targets, y)
    with pytest.raises(IndexError, match=r"index 2000 out of range for 2000 samples"):
        ds[len(ds)]
    with pytest.raises(TypeError, match=r"DistortedMNIST: expected index an int, got float"):
        ds[1.0]


def test_batched_fetch_and_dataloader(tmp_path):
    ds = _make(tmp_path, "addition")
    batch = ds.__getitems__([3, 0, -1])
    for (image, label), i in zip(batch, [3, 0, len(ds) - 1]):
        assert torch.equal(image, ds[i][0]) and label == ds[i][1]
    images, labels = next(iter(DataLoader(ds, batch_size=8, shuffle=False)))
    assert images.shape == (8, 2, 42, 42) and images.dtype == torch.float32
    assert labels.dtype == torch.int64 and torch.equal(labels, ds.targets[:8])
    assert ds.num_classes == 19


def test_transform_params(tmp_path):
    ds = _make(tmp_path, "RTS")
    x, y = load_mnist("test", root="embedded")
    _, _, ref = distort("RTS", x, y, [11], split="test")
    params = ds.transform_params(11)
    assert set(params) == set(ref)
    for name, value in ref.items():
        assert np.array_equal(params[name], value[0]), name
    assert isinstance(params["angle"], float) and params["theta"].shape == (2, 3)
    params["theta"][:] = 0  # a copy: the dataset is not changed
    assert np.array_equal(ds.transform_params(11)["theta"], ref["theta"][0])


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_variant_builds_from_the_embedded_subset(tmp_path, variant):
    ds = _make(tmp_path, variant)
    image, label = ds[0]
    assert tuple(image.shape) == ds.image_size == VARIANTS[variant].image_size()
    assert 0 <= label < ds.num_classes
    assert variant in repr(ds) and "n=2000" in repr(ds)


def test_pickles_without_copying_the_cached_images(tmp_path):
    ds = _make(tmp_path, "T")
    blob = pickle.dumps(ds)
    assert len(blob) < ds.data.numel() // 4, "pickled the images instead of reopening the cache"
    back = pickle.loads(blob)
    assert torch.equal(back[10][0], ds[10][0]) and back.transform_params(3).keys() == \
        ds.transform_params(3).keys()


# --------------------------------------------------------------------------- determinism


def test_same_seed_same_files_across_runs_and_workers(tmp_path):
    a = DistortedMNIST("TC", "test", root="embedded", cache=tmp_path / "a", workers=1,
                       progress=False)
    b = DistortedMNIST("TC", "test", root="embedded", cache=tmp_path / "b", workers=2,
                       progress=False)
    assert a.cache_path.name == b.cache_path.name
    for name in ("images.npy", "labels.npy", "transforms.npz"):
        assert (a.cache_path / name).read_bytes() == (b.cache_path / name).read_bytes(), name
    c = DistortedMNIST("TC", "test", root="embedded", seed=1, cache=False, progress=False)
    assert not torch.equal(c.data, a.data)


# --------------------------------------------------------------------------- cache


def test_cache_is_written_once_and_reused(tmp_path, count_generations):
    first = _make(tmp_path)
    assert len(count_generations) == 1 and not first.from_cache
    entry = first.cache_path
    assert entry.parent == tmp_path and _entries(tmp_path) == [entry.name]  # no temp dirs
    assert _entries(entry) == ["images.npy", "labels.npy", "manifest.json", "transforms.npz"]
    manifest = json.loads((entry / "manifest.json").read_text())
    key = manifest["key"]
    assert key["variant"] == "R" and key["split"] == "test" and key["seed"] == 0
    assert key["params"] == {"size": 28, "angle": [-90.0, 90.0]}
    assert key["source"]["images_md5"] == "014beca301477cb2e974ccd9bba2262c"
    assert key["generator"]["version"] == distortions_module.GENERATOR_VERSION
    assert manifest["count"] == 2000
    second = _make(tmp_path)
    assert len(count_generations) == 1 and second.from_cache
    assert torch.equal(second.data, first.data)
    assert [e["path"] for e in cached_datasets(cache=tmp_path)] == [entry]


@pytest.mark.parametrize("change", ["params", "seed", "split", "source", "generator_version"])
def test_a_change_never_reuses_a_stale_cache(tmp_path, count_generations, monkeypatch, change):
    base = _make(tmp_path)
    kwargs = {}
    if change == "params":
        kwargs["params"] = {"angle": (-10, 10)}
    elif change == "seed":
        kwargs["seed"] = 3
    elif change == "source":
        monkeypatch.setattr(datasets_module, "source_md5", lambda split, root: ("a" * 32, "b" * 32))
    elif change == "generator_version":
        monkeypatch.setattr(datasets_module, "GENERATOR_VERSION", 99)
    if change == "split":
        other = DistortedMNIST("R", "train", root="embedded", cache=tmp_path, progress=False)
    else:
        other = _make(tmp_path, **kwargs)
    assert len(count_generations) == 2, "a stale cache entry was reused"
    assert other.cache_path != base.cache_path and not other.from_cache
    assert len(_entries(tmp_path)) == 2
    if change == "params":
        assert np.abs(other.transform_params(0)["angle"]) <= 10


def test_concurrent_builders_share_one_entry(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    threads = torch.get_num_threads()
    with ThreadPoolExecutor(3) as pool:
        built = list(pool.map(lambda seed: _make(tmp_path, "P"), range(3)))
    assert len({d.cache_path for d in built}) == 1 and _entries(tmp_path) == [
        built[0].cache_path.name]  # no temporary directories left
    assert all(torch.equal(d.data, built[0].data) for d in built)
    assert torch.get_num_threads() == threads, "the torch thread setting was not restored"


def test_tampered_manifest_is_not_trusted(tmp_path, count_generations):
    entry = _make(tmp_path).cache_path
    manifest = json.loads((entry / "manifest.json").read_text())
    manifest["key"]["params"]["angle"] = [-1.0, 1.0]
    (entry / "manifest.json").write_text(json.dumps(manifest))
    again = _make(tmp_path)
    assert len(count_generations) == 2 and again.cache_path == entry
    assert json.loads((entry / "manifest.json").read_text())["key"]["params"]["angle"] == [-90, 90]


def test_truncated_cache_is_rebuilt(tmp_path, count_generations):
    first = _make(tmp_path)
    expected = first.data.clone()
    images = first.cache_path / "images.npy"
    del first
    images.write_bytes(images.read_bytes()[:5000])
    again = _make(tmp_path)
    assert len(count_generations) == 2 and torch.equal(again.data, expected)
    assert _entries(tmp_path) == [again.cache_path.name]


def test_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(datasets_module.np, "savez", broken)
    with pytest.warns(RuntimeWarning, match=r"could not cache R-test-seed0-.*disk full.*memory"):
        ds = DistortedMNIST("R", "test", root="embedded", cache=tmp_path, progress=False)
    assert ds.cache_path is None and len(ds) == 2000
    assert _entries(tmp_path) == []


def test_unwritable_data_dir_falls_back_to_the_user_cache(tmp_path, monkeypatch, isolated_env):
    real = datasets_module._write_entry

    def read_only(cache_dir, *args, **kwargs):
        if cache_dir == tmp_path / "distorted":
            raise PermissionError(13, "Permission denied", str(cache_dir))
        return real(cache_dir, *args, **kwargs)

    monkeypatch.setattr(datasets_module, "_write_entry", read_only)
    # stand-in source data, so that the test does not need the real files
    monkeypatch.setattr(datasets_module, "load_mnist",
                        lambda split, **kw: load_mnist(split, root="embedded"))
    ds = DistortedMNIST("R", "test", root=tmp_path, progress=False)
    assert ds.cache_path.parent == isolated_env / "stnkit" / "distorted"


def test_default_cache_locations(tmp_path, isolated_env, monkeypatch):
    ds = DistortedMNIST("R", "test", root="embedded", progress=False)
    assert ds.cache_path.parent == isolated_env / "stnkit" / "distorted"
    no_cache = DistortedMNIST("R", "test", root="embedded", cache=False, progress=False)
    assert no_cache.cache_path is None and torch.equal(no_cache.data, ds.data)


def test_data_dir_cache_location(mnist_dir, tmp_path, count_generations, monkeypatch):
    """With a data directory the cache goes to ROOT/distorted (real MNIST test split)."""
    import shutil

    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(mnist_dir / name, tmp_path)
    ds = DistortedMNIST("R", "test", root=tmp_path, progress=False, offline=True)
    assert ds.cache_path.parent == tmp_path / "distorted" and len(ds) == 10000
    key = ds.manifest["key"]["source"]
    assert key == {"images_md5": "2646ac647ad5339dbf082846283269ea",
                   "labels_md5": "27ae3e4e09519cfbb04c329615203637"}


# --------------------------------------------------------------------------- errors


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match=r"DistortedMNIST: expected variant one of 'R', 'RTS', "
                                         r".*got 'rts'"):
        DistortedMNIST("rts", "test", root="embedded")
    with pytest.raises(ValueError, match=r"DistortedMNIST: expected split one of 'train', "
                                         r"'test', got 'valid'"):
        DistortedMNIST("RTS", "valid", root="embedded")
    with pytest.raises(TypeError, match=r"DistortedMNIST: expected seed an int, got float"):
        DistortedMNIST("RTS", "test", seed=0.5, root="embedded")
    with pytest.raises(TypeError, match=r"DistortedMNIST: expected seed an int, got NoneType"):
        DistortedMNIST("RTS", "test", seed=None, root="embedded")
    with pytest.raises(ValueError, match=r"DistortedMNIST: expected seed an int in"):
        DistortedMNIST("RTS", "test", seed=-3, root="embedded")
    with pytest.raises(ValueError, match=r"DistortedMNIST: expected params names among"):
        DistortedMNIST("T", "test", root="embedded", params={"angle": (0, 1)})
    with pytest.raises(TypeError, match=r"DistortedMNIST: expected root None, 'embedded' or a "
                                        r"directory path"):
        DistortedMNIST("T", "test", root=1)
    with pytest.raises(TypeError, match=r"DistortedMNIST: expected cache a bool or a directory"):
        DistortedMNIST("T", "test", root="embedded", cache=1)
    with pytest.raises(TypeError, match=r"DistortedMNIST: expected workers None or an int"):
        DistortedMNIST("T", "test", root="embedded", cache=tmp_path, workers=1.5)
    with pytest.raises(ValueError, match=r"DistortedMNIST: expected workers an int >= 1, got 0"):
        DistortedMNIST("T", "test", root="embedded", cache=tmp_path, workers=0)
    with pytest.raises(FileNotFoundError, match=r"offline mode"):
        DistortedMNIST("T", "test", root=tmp_path / "empty", offline=True)


# --------------------------------------------------------------------------- the cache key


def _key(variant="RTS", split="test", seed=0, params=None, root="embedded"):
    from stnkit.data.distortions import resolve_params

    p = resolve_params(variant, params, fn="test")
    return datasets_module._entry_name(datasets_module._cache_key(variant, split, seed, p, root))


def test_cache_key_changes_with_each_parameter(monkeypatch):
    from stnkit.data.distortions import VARIANTS

    base = _key()
    names = {base}
    changed = [_key(variant="R"), _key(split="train"), _key(seed=1)]
    for name, value in VARIANTS["RTS"].defaults.items():  # every parameter of the variant
        other = ([v + 1 for v in value] if isinstance(value, (tuple, list))
                 else not value if isinstance(value, bool) else value + 1)
        changed.append(_key(params={name: other}))
    monkeypatch.setattr(datasets_module, "source_md5", lambda split, root: ("a" * 32, "b" * 32))
    changed.append(_key())
    monkeypatch.undo()
    for attr, value in (("GENERATOR_VERSION", 99), ("CHUNK", 128), ("CACHE_FORMAT", 99)):
        monkeypatch.setattr(datasets_module, attr, value)
        changed.append(_key())
        monkeypatch.undo()
    monkeypatch.setattr(datasets_module, "warp_backend", lambda: "other")
    changed.append(_key())
    monkeypatch.undo()
    for module in (datasets_module.torch, datasets_module.np):
        monkeypatch.setattr(module, "__version__", "0.0")
        changed.append(_key())
        monkeypatch.undo()
    names.update(changed)
    assert len(names) == len(changed) + 1, "a parameter that does not change the key"
    assert _key() == base


def test_cache_key_does_not_hash_source_code(monkeypatch):
    """Editing a comment in the generator or the ops keeps every cache (the version constant,
    not the source, says when the data changed)."""
    import pathlib

    base = _key()
    real = pathlib.Path.read_bytes

    def edited(self):
        data = real(self)
        return data + b"\n# an edited comment\n" if self.suffix == ".py" else data

    monkeypatch.setattr(pathlib.Path, "read_bytes", edited)
    assert _key() == base


# sha256 of images + labels of samples 0-3 of each variant (test split, seed 0, embedded),
# by warp backend, for the torch version they were computed with. A change here means the
# generated data changed: bump GENERATOR_VERSION (stnkit/data/distortions.py) and update.
PINNED = {
    ("cpp", "1"): {
        "R": "7a05e1a66433a734", "RTS": "e48230f2455aa0a7", "P": "380c89978db5fa9d",
        "E": "1804a07864a8c9c6", "T": "1ec99839d2018c07", "TC": "b3b66719482806cb",
        "addition": "30fa995df1f605a1", "colocalisation": "1251091d12559467",
    },
}
PINNED_TORCH = "2.13.0"


def test_generated_bytes_are_pinned():
    import hashlib

    from stnkit.data import GENERATOR_VERSION, generate
    from stnkit.data.distortions import warp_backend

    backend = warp_backend()
    pinned = PINNED.get((backend, str(GENERATOR_VERSION)))
    if pinned is None or not torch.__version__.startswith(PINNED_TORCH):
        pytest.skip(f"no pinned bytes for backend {backend}, generator version "
                    f"{GENERATOR_VERSION}, torch {torch.__version__}")
    got = {}
    for variant in pinned:
        images, labels, _ = generate(variant, "test", seed=0, root="embedded", indices=range(4))
        h = hashlib.sha256(np.ascontiguousarray(images).tobytes())
        h.update(np.ascontiguousarray(labels).tobytes())
        got[variant] = h.hexdigest()[:16]
    assert got == pinned, ("the generated data changed: bump GENERATOR_VERSION in "
                           "stnkit/data/distortions.py and update PINNED")
