"""The ONNX Runtime path: the torch-free tokenizer and transform equal open_clip's, the exported towers
equal the torch model, exports are cached and keyed, and a search or an unchanged index run never
imports torch, torchvision or open_clip."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, TEST_MODEL, import_blocker
from PIL import Image

from clip_encoder import CLIPEncoder
from photoseek.encoders.base import BUILTIN_MODELS, choose_local_runtime
from photoseek.errors import InvalidArgumentError

TEXTS = ["a cute cat", "一只可爱的猫咪", "🐱🐶 emoji!!", "café naïve résumé Ünïcödé", "", "   ", "x" * 500,
         " ".join(["word"] * 200), "&amp;lt;b&gt; html &amp; entities", "Don't you'll we've I'm", "ＦＵＬＬ width ｔｅｘｔ",
         "e\u0301 combining accents", "tab\tnew\nline", "snake_case_file_name.jpg, (punct!) [here]", "日本語とEnglish mixed 123,456.78", "Ελληνικά и русский", "🇯🇵 flags 👩‍👩‍👧"]


def test_tokenizer_matches_open_clip_token_for_token() -> None:
    from open_clip.tokenizer import SimpleTokenizer, default_bpe

    from photoseek.encoders.clip_tokenizer import CLIPTokenizer

    for clean in ("lower", "whitespace", "canonicalize"):
        reference = SimpleTokenizer(clean=clean)
        ours = CLIPTokenizer(default_bpe(), clean=clean)
        for text in TEXTS:
            assert np.array_equal(ours([text]), reference([text]).numpy()), (clean, text)
    shorter = SimpleTokenizer(context_length=16)
    assert np.array_equal(CLIPTokenizer(default_bpe(), context_length=16)(TEXTS), shorter(TEXTS).numpy())


@pytest.mark.parametrize("resize_mode", ["shortest", "longest", "squash"])
def test_transform_matches_open_clip_on_photos_and_odd_sizes(photos: dict[str, Path], resize_mode: str) -> None:
    from open_clip.transform import image_transform

    from photoseek.encoders.preprocess import ImageTransform

    mean, std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
    rng = np.random.default_rng(0)
    images = [Image.open(p).convert("RGB") for p in photos.values()]
    images += [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for w, h in [(301, 199), (33, 500), (224, 224), (50, 20)]]
    # CLIPEncoder.encode_images takes a caller's own images: grey, with transparency, with a palette, each
    # made RGB as open_clip does it (after the resize, so a transparent pixel's colour is open_clip's too)
    rocket = Image.open(photos["rocket"])
    transparent = rocket.convert("RGBA")
    transparent.putalpha(Image.fromarray(rng.integers(0, 255, transparent.size[::-1], dtype=np.uint8)))
    images += [rocket.convert("L"), transparent, rocket.convert("P", palette=Image.Palette.ADAPTIVE)]
    for size in (224, (224, 256), 64):
        for interpolation in ("bicubic", "bilinear"):
            reference = image_transform(size, is_train=False, mean=mean, std=std, resize_mode=resize_mode,
                                        interpolation=interpolation, fill_color=0)
            ours = ImageTransform((size, size) if isinstance(size, int) else size, mean, std, interpolation, resize_mode)
            for image in images:
                expected, got = reference(image).numpy(), ours(image)
                assert got.shape == expected.shape and got.dtype == np.float32
                assert np.abs(got - expected).max() < 1e-5, (size, interpolation, image.size, image.mode)


def test_a_recorded_transform_reads_back_as_it_was_written(photos: dict[str, Path]) -> None:
    """An ONNX export records its transform (onnx_export writes size as [height, width]) and every later run
    rebuilds it from that record: a non-square size, the interpolation, the resize mode and the padding colour
    must come back as written, and a record from before a field existed takes open_clip's default for it."""
    from photoseek.encoders.preprocess import ImageTransform

    mean, std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
    wide = Image.open(photos["rocket"]).convert("RGB")  # 640x427: padded under "longest", squashed under "squash"
    images = (wide, wide.transpose(Image.Transpose.ROTATE_90))  # padded above and below, and left and right
    for written in (ImageTransform((200, 256), mean, std, "bilinear", "longest", 7),
                    ImageTransform((256, 200), mean, std, "bilinear", "squash", 0)):
        record = json.loads(json.dumps({"size": list(written.size), "mean": list(written.mean), "std": list(written.std),
                                        "interpolation": written.interpolation, "resize_mode": written.resize_mode,
                                        "fill_color": written.fill_color}))
        read = ImageTransform.from_record(record)
        assert (read.size, read.interpolation, read.resize_mode, read.fill_color) == \
            (written.size, written.interpolation, written.resize_mode, written.fill_color)
        for image in images:
            assert np.array_equal(read(image), written(image))
    # the padding is the recorded colour on each side, the photo centred: 427 of 640 px scaled to 256 leaves
    # 171, so 29 rows (or columns) of padding: 14 before the photo, 15 after
    for image, size, axis in zip(images, ((200, 256), (256, 200)), (1, 2), strict=True):
        pixels = ImageTransform(size, (0.0, 0.0, 0.0), (1 / 255, 1 / 255, 1 / 255), "bilinear", "longest", 7)(image)
        before, after = pixels.take(range(14), axis=axis), pixels.take(range(200 - 15, 200), axis=axis)
        assert np.allclose(before, 7, atol=1e-4) and np.allclose(after, 7, atol=1e-4)
        for edge in (14, 200 - 16):  # the photo's first and last row (or column)
            assert not np.allclose(pixels.take(edge, axis=axis), 7, atol=1e-4)
    # a square size written as one number, and fields an older record lacks or left empty
    for record in ({"size": 224, "mean": mean, "std": std},
                   {"size": 224, "mean": mean, "std": std, "interpolation": None, "resize_mode": None, "fill_color": None}):
        read = ImageTransform.from_record(record)
        assert (read.size, read.interpolation, read.resize_mode, read.fill_color) == ((224, 224), "bicubic", "shortest", 0)
    with pytest.raises(ValueError, match="^unknown resize mode 'fit'$"):
        ImageTransform((224, 224), mean, std, "bicubic", "fit")
    with pytest.raises(ValueError, match="^unknown interpolation 'cubic'$"):
        ImageTransform((224, 224), mean, std, "cubic", "shortest")


@pytest.fixture(scope="module")
def onnx_and_torch() -> tuple[CLIPEncoder, CLIPEncoder]:
    onnx = CLIPEncoder(model_name=TEST_MODEL, device="cpu", precision="fp32")
    torch_ = CLIPEncoder(model_name=TEST_MODEL, device="cpu", precision="fp32", runtime="torch")
    return onnx, torch_


@pytest.mark.slow
def test_onnx_towers_equal_the_torch_model(onnx_and_torch: tuple[CLIPEncoder, CLIPEncoder], photos: dict[str, Path]) -> None:
    onnx, torch_ = onnx_and_torch
    assert onnx.runtime == "onnx" and torch_.runtime == "torch"
    assert onnx.dim == torch_.dim and onnx.image_size == torch_.image_size and onnx.build == torch_.build
    images = [Image.open(p).convert("RGB") for p in photos.values()]
    a, b = onnx.encode_images(images), torch_.encode_images(images)
    assert np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)
    assert (a * b).sum(axis=1).min() >= 0.9999
    texts = [t for t in TEXTS if t.strip()] + ["a big red circle and a small blue star"]
    a, b = onnx.encode_texts(texts), torch_.encode_texts(texts)
    assert (a * b).sum(axis=1).min() >= 0.9999
    # one query alone (its own length) and inside a batch of longer ones give the same vector
    assert np.allclose(onnx.encode_texts(["a red circle"])[0], onnx.encode_texts(["a red circle", "x " * 100])[0], atol=1e-5)


@pytest.mark.slow
def test_int8_images_stay_close_and_activation_override_is_honoured(photos: dict[str, Path]) -> None:
    images = [Image.open(p).convert("RGB") for p in photos.values()]
    exact = CLIPEncoder(model_name=TEST_MODEL, device="cpu", precision="fp32")
    quantised = CLIPEncoder(model_name=TEST_MODEL, device="cpu", precision="int8")
    cosines = (exact.encode_images(images) * quantised.encode_images(images)).sum(axis=1)
    assert cosines.min() >= 0.99, cosines
    # bf16 images on torch behind the ONNX text tower: same vectors within bf16's rounding, text untouched
    hybrid = CLIPEncoder(model_name=TEST_MODEL, device="cpu", precision="bf16")
    assert hybrid.runtime == "onnx+torch-bf16-images" and hybrid.build == exact.build
    assert (exact.encode_images(images) * hybrid.encode_images(images)).sum(axis=1).min() >= 0.999
    assert np.allclose(exact.encode_texts(["a red circle"]), hybrid.encode_texts(["a red circle"]))
    # a collection filled with QuickGELU keeps QuickGELU on ONNX too (its own export, not GELU's)
    quick = CLIPEncoder(model_name=TEST_MODEL, device="cpu", precision="fp32", activation="quick_gelu")
    quick_torch = CLIPEncoder(model_name=TEST_MODEL, device="cpu", precision="fp32", activation="quick_gelu", runtime="torch")
    assert quick.build["activation"] == "quick_gelu" and exact.build["activation"] == "gelu"
    a, b = quick.encode_images(images), quick_torch.encode_images(images)
    assert (a * b).sum(axis=1).min() >= 0.9999
    assert not np.allclose(a, exact.encode_images(images), atol=1e-4)


def test_runtime_choice_and_refusals() -> None:
    assert choose_local_runtime("auto", "cpu", "auto") == "onnx"
    assert choose_local_runtime("auto", "cpu", "fp32") == "onnx"
    assert choose_local_runtime("auto", "cpu", "bf16") == "onnx"  # text on ONNX; the bf16 image tower on torch, lazily
    assert choose_local_runtime("auto", "cpu", "fp16") == "torch"
    assert choose_local_runtime("auto", "cuda", "auto") == "torch"
    assert choose_local_runtime("torch", "cpu", "auto") == "torch"
    with pytest.raises(InvalidArgumentError, match="runtime must be one of"):
        choose_local_runtime("tensorrt", "cpu", "auto")
    with pytest.raises(InvalidArgumentError, match="ONNX runtime runs on the CPU"):
        CLIPEncoder(model_name=TEST_MODEL, device="cuda", runtime="onnx")
    with pytest.raises(InvalidArgumentError, match="the ONNX runtime runs the image tower in auto, fp32, int8, not 'bf16'"):
        CLIPEncoder(model_name=TEST_MODEL, device="cpu", precision="bf16", runtime="onnx")
    with pytest.raises(InvalidArgumentError, match="int8 runs on the ONNX runtime only"):
        CLIPEncoder(model_name=TEST_MODEL, device="cpu", precision="int8", runtime="torch")


@pytest.mark.slow
def test_export_is_cached_and_keyed_by_the_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from photoseek.encoders import onnx_backend

    monkeypatch.setenv("PHOTOSEEK_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "model"
    shutil.copytree(BUILTIN_MODELS[TEST_MODEL], folder)
    first = CLIPEncoder(model_name=str(folder), device="cpu")
    export = first.backend.folder  # type: ignore[attr-defined]
    made = (export / "export.json").stat().st_mtime_ns
    assert (export / "textual.onnx.data").is_file() and (export / "visual.onnx.data").is_file()
    checks = json.loads((export / "export.json").read_text())["checks"]
    assert checks["image_cosine_min"] >= 0.9999 and checks["text_cosine_min"] >= 0.9999

    calls: list[str] = []
    real_export = onnx_backend.ensure_export.__globals__["export_folder"]
    monkeypatch.setattr(onnx_backend, "export_folder", lambda *a, **k: (calls.append("x"), real_export(*a, **k))[1])
    again = CLIPEncoder(model_name=str(folder), device="cpu")
    assert again.backend.folder == export and (export / "export.json").stat().st_mtime_ns == made  # type: ignore[attr-defined]
    assert np.allclose(first.encode_texts(["a red circle"]), again.encode_texts(["a red circle"]))

    weights = folder / "open_clip_model.safetensors"  # new weights (same size, new mtime): a new export
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    assert onnx_backend.export_folder(str(folder))[0] != export
    broken = tmp_path / "cache2"
    monkeypatch.setenv("PHOTOSEEK_CACHE", str(broken))
    target, _ = onnx_backend.export_folder(TEST_MODEL)
    target.mkdir(parents=True)
    (target / "export.json").write_text("{not json")
    with pytest.raises(Exception, match="delete that folder to export again"):
        CLIPEncoder(model_name=TEST_MODEL, device="cpu")


CHILD = """
import json, os, runpy, sys
sys.argv = ["image_search.py", *json.loads(sys.argv[1])]
real_exit = os._exit

def report_then_exit(code):  # the CLI ends with os._exit: say what was imported first
    heavy = sorted(m for m in ("torch", "torchvision", "open_clip") if m in sys.modules)
    sys.stderr.write("\\nHEAVY=" + json.dumps(heavy) + "\\n")
    sys.stderr.flush()
    real_exit(code)

os._exit = report_then_exit
runpy.run_path({script!r}, run_name="__main__")
"""


def _run_counting_imports(args: list[str], home: Path) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    env = {**os.environ, "PHOTOSEEK_HOME": str(home)}
    env.pop("PHOTOSEEK_MILVUS_URI", None)
    code = CHILD.format(script=str(ROOT / "image_search.py"))
    done = subprocess.run([sys.executable, "-c", code, json.dumps(args)], capture_output=True, text=True, env=env, timeout=300)
    marker = [line for line in done.stderr.splitlines() if line.startswith("HEAVY=")]
    assert marker, done.stderr
    return done, json.loads(marker[-1].removeprefix("HEAVY="))


@pytest.mark.slow
def test_search_and_unchanged_index_import_no_torch(tmp_path: Path, scenes: Path) -> None:
    home = tmp_path / "home"
    first, _ = _run_counting_imports(["--mode", "index", "--model", TEST_MODEL, "--image-dir", str(scenes), "-q"], home)
    assert first.returncode == 0 and "indexed 24" in first.stdout, first.stderr
    rerun, heavy = _run_counting_imports(["--mode", "index", "--image-dir", str(scenes), "-q"], home)
    assert rerun.returncode == 0 and "unchanged 24" in rerun.stdout, rerun.stderr
    assert heavy == [], f"an unchanged index run imported {heavy}"
    (scenes / "scene_00000.png").unlink()
    shutil.copy(scenes / "scene_00001.png", scenes / "copy.png")
    # new files in fp32 (auto picks torch bf16 for images on CPUs with native bf16: faster, and loaded only now)
    changed, heavy = _run_counting_imports(["--mode", "index", "--image-dir", str(scenes), "-q", "--precision", "fp32"], home)
    assert changed.returncode == 0 and "indexed 1, unchanged 23, removed 1" in changed.stdout, changed.stdout
    assert heavy == [], f"indexing a new file in fp32 with an exported model imported {heavy}"
    searched, heavy = _run_counting_imports(["--mode", "search", "--query", "a red circle", "--json"], home)
    assert searched.returncode == 0 and len(json.loads(searched.stdout)) == 5, searched.stderr
    assert heavy == [], f"a search imported {heavy}"
    stats, heavy = _run_counting_imports(["--mode", "stats", "--json"], home)
    assert stats.returncode == 0 and heavy == []
    # the server searches without torch installed (hidden from the import system): it had held 715 MB for one product
    blocker = import_blocker(tmp_path / "block", "torch", "torchvision", "open_clip")
    from http_server import free_port

    port = free_port()
    env = {**os.environ, "PHOTOSEEK_HOME": str(home), "PYTHONPATH": blocker, "PHOTOSEEK_CACHE": os.environ["PHOTOSEEK_CACHE"]}
    env.pop("PHOTOSEEK_MILVUS_URI", None)
    server = subprocess.Popen([sys.executable, "-m", "photoseek", "serve", "--port", str(port), "--precision", "fp32"],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        import time

        import httpx

        deadline = time.time() + 120
        while True:
            try:
                found = httpx.get(f"http://127.0.0.1:{port}/api/search", params={"q": "a red circle"}, timeout=5)
                break
            except httpx.HTTPError:
                assert server.poll() is None and time.time() < deadline, server.communicate()[1][-2000:]
                time.sleep(0.3)
        assert found.status_code == 200 and len(found.json()["results"]) == 10  # the API's default top_k
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.mutation  # in process: the mutation runs take it
def test_a_damaged_export_is_named_never_a_nan_and_no_pickle_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The export cache was trusted blindly: bytes flipped in a weights file (size and mtime kept) gave searches a
    bare NaN score (invalid JSON) with exit 0, and a crafted tokenizer.pickle ran its code. Files are now checked
    at each load (size, sampled hash) and whole when a result is not a number; no pickle is read."""
    from photoseek.encoders import onnx_backend
    from photoseek.errors import ModelLoadError

    monkeypatch.setenv("PHOTOSEEK_CACHE", str(tmp_path / "cache"))
    encoder = CLIPEncoder(model_name=TEST_MODEL, device="cpu", precision="fp32")
    assert np.isfinite(encoder.encode_texts(["a red circle"])).all()
    folder = encoder.backend.folder  # type: ignore[attr-defined]
    encoder.close()
    # a pickle planted where the old exports kept the tokenizer's tables: never opened
    marker = tmp_path / "pickle-ran"
    import pickle

    class Payload:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (open, (str(marker), "w"))

    (folder / "tokenizer.pickle").write_bytes(pickle.dumps(Payload()))
    assert np.isfinite(CLIPEncoder(model_name=TEST_MODEL, device="cpu", precision="fp32").encode_texts(["a red circle"])).all()
    assert not marker.exists()
    # every byte of the text weights that the load-time samples do not read, set to 0xFF (NaN as float32)
    data = folder / "textual.onnx.data"
    size, times = data.stat().st_size, (data.stat().st_atime_ns, data.stat().st_mtime_ns)
    sampled = {max(0, (size - onnx_backend.SAMPLE_BYTES) * i // (onnx_backend.SAMPLES - 1)) for i in range(onnx_backend.SAMPLES)}
    content = bytearray(data.read_bytes())
    keep = bytearray(content)
    content[:] = b"\xff" * size
    for start in sampled:
        content[start : start + onnx_backend.SAMPLE_BYTES] = keep[start : start + onnx_backend.SAMPLE_BYTES]
    data.write_bytes(bytes(content))
    os.utime(data, ns=times)
    damaged = CLIPEncoder(model_name=TEST_MODEL, device="cpu", precision="fp32")  # the samples still match
    with pytest.raises(ModelLoadError, match=f"{data}.*not the file exported there.*delete"):
        damaged.encode_texts(["a red circle"])
    # a flip where the samples look: refused when the model loads
    content = bytearray(keep)
    content[0:16] = b"\xff" * 16
    data.write_bytes(bytes(content))
    os.utime(data, ns=times)
    with pytest.raises(ModelLoadError, match="textual.onnx.data is not the file exported there"):
        CLIPEncoder(model_name=TEST_MODEL, device="cpu", precision="fp32")


def test_an_unusable_cache_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from photoseek.errors import ModelLoadError

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("PHOTOSEEK_CACHE", str(blocker / "cache"))
    with pytest.raises(ModelLoadError, match=r"cannot use the model cache at .*a-file/cache.*PHOTOSEEK_CACHE"):
        CLIPEncoder(model_name=TEST_MODEL, device="cpu", runtime="onnx")


def test_exports_of_a_pretrained_tag_follow_the_weights_open_clip_would_load(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from photoseek.encoders import onnx_backend

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-a"))
    first = onnx_backend.export_folder("ViT-B-32::openai")[0]
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-b"))
    assert onnx_backend.export_folder("ViT-B-32::openai")[0] != first  # another cache, other weights
    # an export records the weights file it was made from; a changed file makes it stale
    weights = tmp_path / "open_clip_model.safetensors"
    weights.write_bytes(b"x" * 10)
    export = tmp_path / "export"
    export.mkdir()
    stat = weights.stat()
    (export / "export.json").write_text(json.dumps({"weights_files": [[str(weights), stat.st_size, stat.st_mtime_ns]]}))
    assert onnx_backend._weights_unchanged(export)
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert not onnx_backend._weights_unchanged(export)
    weights.unlink()
    assert not onnx_backend._weights_unchanged(export)


@pytest.mark.slow
def test_threads_share_one_lazily_built_session() -> None:
    from concurrent.futures import ThreadPoolExecutor

    encoder = CLIPEncoder(model_name=TEST_MODEL, device="cpu", precision="fp32")
    with ThreadPoolExecutor(8) as pool:
        vectors = list(pool.map(lambda _: encoder.encode_texts(["a red circle"]), range(16)))
    assert all(np.array_equal(v, vectors[0]) for v in vectors)
    backend = encoder.backend
    assert list(backend._sessions) == ["text"]  # type: ignore[attr-defined]


@pytest.mark.slow
def test_a_model_without_a_torch_free_tokenizer_runs_on_torch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SigLIP and Hugging Face text towers have tokenizers our port does not reproduce: such a model keeps
    running on torch, says why, and the refused export is remembered (not retried at every start)."""
    from photoseek.encoders import onnx_export
    from photoseek.errors import UnsupportedForOnnx

    monkeypatch.setenv("PHOTOSEEK_CACHE", str(tmp_path / "cache"))
    attempts: list[str] = []

    def refuse(tokenizer: object) -> dict[str, object]:
        attempts.append("export")
        raise UnsupportedForOnnx("its tokenizer (HFTokenizer) is not open_clip's CLIP BPE tokenizer")

    monkeypatch.setattr(onnx_export, "_tokenizer_record", refuse)
    with pytest.warns(UserWarning, match=f"{TEST_MODEL} runs on torch: its tokenizer"):
        first = CLIPEncoder(model_name=TEST_MODEL, device="cpu", precision="fp32")
    assert first.runtime == "torch" and "HFTokenizer" in first.runtime_note
    assert first.encode_texts(["a red circle"]).shape == (1, 64)
    with pytest.warns(UserWarning, match="runs on torch"):
        again = CLIPEncoder(model_name=TEST_MODEL, device="cpu", precision="fp32")
    assert again.runtime == "torch" and attempts == ["export"]  # remembered
    with pytest.raises(UnsupportedForOnnx, match="HFTokenizer"):
        CLIPEncoder(model_name=TEST_MODEL, device="cpu", runtime="onnx")  # asked for ONNX explicitly: said, not hidden
