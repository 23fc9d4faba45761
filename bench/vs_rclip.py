"""photoseek against rclip 4.0.8, the command-line peer users would pick, whole processes side by side.

    python bench/vs_rclip.py                 # 300 photos of 12 megapixels, 5 alternating rounds
    python bench/vs_rclip.py --photos 60 --rounds 3

Sets rclip 4.0.8 up in its own venv (bench/out/rclip-venv, Python >= 3.12 from pyenv or $RCLIP_PYTHON)
and gives both tools the same random ViT-B-32-256 weights: an open_clip model folder for us, and for
rclip the ONNX files its `scripts/convert_model.py` would write (opset 18, input/output named
`input`/`output`) under $RCLIP_DATADIR, with the tokenizer vocabulary and the four licence files it
checks for, so it runs offline. photoseek runs as a user installs it (`pip install .`, no extras) in
a venv of its own (bench/out/ours-venv; torch borrowed, see ours_command). Every figure is a whole
process: start, model, store, exit.

Prints one table and the ratios against the targets of issue #11: one-shot search <= 1.0x rclip's time,
unchanged re-run <= 1.0x, search peak RSS <= 600 MB, whole-process indexing >= 1.5x rclip's images/s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from corpus import OUT, corpus_files, make_corpus, random_open_clip_folder  # noqa: E402

RCLIP_VERSION = "4.0.8"
RCLIP_MODEL = "ViT-B-32-256-datacomp_s34b_b86k"
LEGAL_FILES = ("LICENSE", "OPENAI-CLIP-MIT.txt", "README.md", "THIRD_PARTY_NOTICES.md")
QUERIES = ["a cat sitting on a sofa", "a rocket launch at night", "coffee on a wooden table"]


def rclip_python() -> Path:
    venv = OUT / "rclip-venv"
    if (venv / "bin" / "rclip").exists():
        return venv / "bin" / "python"
    candidates = [os.environ.get("RCLIP_PYTHON", "")] + sorted(str(p) for p in Path("/root/.pyenv/versions").glob("3.1[2-9]*/bin/python"))
    python = next((c for c in candidates if c and Path(c).exists()), None) or shutil.which("python3.12")
    if not python:
        sys.exit("rclip needs Python >= 3.12: set RCLIP_PYTHON")
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", f"rclip=={RCLIP_VERSION}"], check=True)
    return venv / "bin" / "python"


def ours_command() -> list[str]:
    """photoseek as a user installs it: `pip install .` (core, no extras) into its own venv, like rclip's.

    torch, torchvision and their CUDA libraries (5.5 GB) are borrowed from the running interpreter's
    environment through a folder of links searched last, so pip counts them as installed; nothing else
    of the development venv (scipy, scikit-image, pytest...) is visible to the measured process.
    """
    import sysconfig

    venv = OUT / "ours-venv"
    marker = venv / f"installed-{_tree_digest()}"
    if not marker.exists():
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        own_site = Path(subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                       capture_output=True, text=True, check=True).stdout.strip())
        borrowed = venv / "borrowed-torch"
        borrowed.mkdir()
        for entry in Path(sysconfig.get_path("purelib")).iterdir():
            if entry.name.lower().startswith(("torch", "nvidia", "triton", "cuda", "functorch")):
                os.symlink(entry, borrowed / entry.name)
        (own_site / "_borrowed_torch.pth").write_text(f"{borrowed}\n")
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(ROOT)], check=True,
                       env=os.environ | {"PIP_NO_CACHE_DIR": "1"})
        marker.touch()
    return [str(venv / "bin" / "photoseek")]


def _tree_digest() -> str:
    """Changes when the project's code does, so the measured install is the code under test."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted([ROOT / "pyproject.toml", ROOT / "image_search.py", ROOT / "clip_encoder.py", ROOT / "milvus_store.py",
                        *(ROOT / "photoseek").rglob("*.py")]):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def venv_size_mb(venv: Path, skip: str = "borrowed-torch") -> float:
    total = 0
    for path in venv.rglob("*"):
        if skip in path.parts or path.is_symlink() or not path.is_file():
            continue
        total += path.stat().st_size
    return total / 2**20


def random_model() -> Path:
    """ViT-B-32-256 with fixed random weights, as an open_clip model folder (preprocessing of its datacomp tag)."""
    return random_open_clip_folder("ViT-B-32-256", "vit-b-32-256-random", "datacomp_s34b_b86k")


def rclip_models(model_dir: Path) -> Path:
    """The same weights the way rclip's convert_model.py exports them."""
    data = OUT / "rclip-models"
    target = data / RCLIP_MODEL
    if (target / "visual.onnx").exists() and (target / "textual.onnx").exists():
        return data
    import open_clip
    import torch
    from open_clip.tokenizer import default_bpe

    from photoseek.encoders.onnx_export import TextTower, VisualTower

    model = open_clip.create_model(f"local-dir:{model_dir}").eval()

    target.mkdir(parents=True, exist_ok=True)
    torch.backends.mha.set_fastpath_enabled(False)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with torch.no_grad():
        torch.onnx.export(VisualTower(model).eval(), (torch.zeros(2, 3, 256, 256),), str(target / "visual.onnx"), input_names=["input"],
                          output_names=["output"], dynamic_shapes={"pixels": {0: batch}}, opset_version=18, dynamo=True,
                          external_data=False)
        torch.onnx.export(TextTower(model, trim=False).eval(), (torch.zeros(2, 77, dtype=torch.long),), str(target / "textual.onnx"),
                          input_names=["input"], output_names=["output"], dynamic_shapes={"tokens": {0: batch}},
                          opset_version=18, dynamo=True, external_data=False)
    (data / "tokenizer").mkdir(exist_ok=True)
    shutil.copyfile(default_bpe(), data / "tokenizer" / "bpe_simple_vocab_16e6.txt.gz")
    for name in LEGAL_FILES:
        (data / name).write_text("random weights for a benchmark; see the real rclip-models repository for the licences\n")
    return data


def fresh_rclip_datadir(models: Path, where: Path) -> Path:
    """A data folder with no index, the model files linked in (rclip keeps its database there too)."""
    shutil.rmtree(where, ignore_errors=True)
    where.mkdir(parents=True)
    for entry in models.iterdir():
        os.symlink(entry, where / entry.name)
    return where


def run_measured(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float, str]:
    """Like `timed`, but the peak RSS of exactly this child (through a tiny wrapper process)."""
    wrapper = ("import os, resource, subprocess, sys, time, json\n"
               "t = time.perf_counter(); p = subprocess.run(sys.argv[1:], capture_output=True)\n"
               "w = time.perf_counter() - t\n"
               "sys.stdout.write(json.dumps({'wall': w, 'rss': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, "
               "'rc': p.returncode, 'out': p.stdout.decode(errors='replace'), 'err': p.stderr.decode(errors='replace')[-3000:]}))\n")
    result = subprocess.run([sys.executable, "-c", wrapper, *command], cwd=cwd, env=env, capture_output=True, text=True, check=True)
    record = json.loads(result.stdout)
    if record["rc"] != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({record['rc']}):\n{record['err']}")
    return record["wall"], record["rss"], record["out"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ours-runtime", default="auto", help="passed to photoseek --runtime")
    parser.add_argument("--ours-precision", default="auto", help="passed to photoseek --precision")
    args = parser.parse_args()

    rclip = rclip_python()
    model_dir = random_model()
    models = rclip_models(model_dir)
    corpus = make_corpus(args.photos)
    work = OUT / "vs_rclip"
    shutil.rmtree(work, ignore_errors=True)
    photos = work / "photos"
    photos.mkdir(parents=True)
    for file in corpus_files(corpus, args.photos):
        os.link(file, photos / file.name) if file.stat().st_dev == photos.stat().st_dev else shutil.copy2(file, photos / file.name)

    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("PHOTOSEEK_", "RCLIP_"))}
    base_env |= {"HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    ours_env = base_env | {"PHOTOSEEK_CACHE": str(work / "ours-cache"), "PHOTOSEEK_HOME": str(work / "ours-home")}
    ours = ours_command()
    ours_index = [*ours, "--mode", "index", "--image-dir", str(photos), "--model", str(model_dir), "-q",
                  "--runtime", args.ours_runtime, "--precision", args.ours_precision]
    rclip_bin = str(rclip.parent / "rclip")

    # the one-time export (ours) happens before timing, as rclip's model download does
    (work / "empty").mkdir()
    run_measured([*ours, "--mode", "index", "--image-dir", str(work / "empty"), "--model", str(model_dir), "-q",
                  "--runtime", args.ours_runtime], work, ours_env)

    figures: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        figures.setdefault(name, []).append(value)

    for round_ in range(args.rounds):
        # whole-process indexing from an empty index
        rclip_env = base_env | {"RCLIP_DATADIR": str(fresh_rclip_datadir(models, work / "rclip-data"))}
        shutil.rmtree(work / "ours-home", ignore_errors=True)
        wall, rss, _ = run_measured([rclip_bin, "-f", "-t", "5", QUERIES[0]], photos, rclip_env)
        add("rclip index img/s", args.photos / wall)
        add("rclip index RSS", rss)
        wall, rss, _ = run_measured(ours_index, photos, ours_env)
        add("ours index img/s", args.photos / wall)
        add("ours index RSS", rss)
        for query in QUERIES:
            wall, rss, out = run_measured([rclip_bin, "-n", "-f", "-t", "5", query], photos, rclip_env)
            add("rclip search s", wall)
            add("rclip search RSS", rss)
            wall, rss, out = run_measured([*ours, "--mode", "search", "--query", query, "--top-k", "5"], photos, ours_env)
            add("ours search s", wall)
            add("ours search RSS", rss)
        wall, rss, _ = run_measured([rclip_bin, "-f", "-t", "5", QUERIES[1]], photos, rclip_env)
        add("rclip rerun s", wall)
        wall, rss, _ = run_measured([*ours, "--mode", "index", "--image-dir", str(photos), "-q"], photos, ours_env)
        add("ours rerun s", wall)
        print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr)

    med = {name: statistics.median(values) for name, values in figures.items()}
    rows = [
        ("one-shot text search (s, median)", med["rclip search s"], med["ours search s"], med["ours search s"] / med["rclip search s"], "<= 1.0"),
        ("re-run over the unchanged folder (s)", med["rclip rerun s"], med["ours rerun s"], med["ours rerun s"] / med["rclip rerun s"], "<= 1.0"),
        ("peak RSS of a search (MB)", med["rclip search RSS"], med["ours search RSS"], med["ours search RSS"] / med["rclip search RSS"], "<= 600 MB"),
        ("indexing, whole process (img/s)", med["rclip index img/s"], med["ours index img/s"], med["ours index img/s"] / med["rclip index img/s"], ">= 1.5"),
        ("peak RSS while indexing (MB)", med["rclip index RSS"], med["ours index RSS"], med["ours index RSS"] / med["rclip index RSS"], ""),
    ]
    print(f"\n{args.photos} photos of 12 MP, random ViT-B-32-256 weights, {args.rounds} alternating rounds, medians; "
          f"ours: --runtime {args.ours_runtime} --precision {args.ours_precision}")
    print(f"| | rclip {RCLIP_VERSION} | photoseek | ratio | target |\n|---|---|---|---|---|")
    for name, theirs, mine, ratio, target in rows:
        print(f"| {name} | {theirs:.2f} | {mine:.2f} | {ratio:.2f}x | {target} |")
    print("(the re-run is rclip's `rclip QUERY`, which checks the folder and searches; ours is `--mode index` over the folder)")
    print(f"installed size: rclip venv {venv_size_mb(rclip.parent.parent):.0f} MB; photoseek venv "
          f"{venv_size_mb(OUT / 'ours-venv'):.0f} MB plus torch and torchvision (borrowed here; about 5.5 GB with CUDA "
          "libraries from PyPI, used only to export a model once and for the bf16 image tower)")


if __name__ == "__main__":
    main()
