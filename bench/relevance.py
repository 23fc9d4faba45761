"""Relevance: is the right photo first? Word matching and duplicate grouping measured on corpora made here.

    python bench/relevance.py [--seed 20261207] [--scenes 500] [--only visual,folders,names,stability,duplicates]

Every search case runs twice on the same index, with word matching (`text_match="auto"`, the default) and
without (`"off"`, CLIP alone), with the shipped test model on Milvus Lite:

- visual: held-out scenes (tools/make_scenes.py, a seed the model never saw) in folders with place and event
  names, files named IMG_0001.png; 0 %, 1 %, 10 % and 100 % of them described by their own captions or by
  another scene's (unrelated) caption; each scene's caption is a query whose answer is that scene
  (R@1, R@5, MRR), in English and in Chinese;
- folders: 60 of 200 scenes in "2019-06 Kyoto" (Chinese: "2019年6月 京都"); the folder's whole name and one
  word of it (how many of the top 10 come from the folder), a word plus a scene's caption ("Kyoto a small red
  circle": that scene among the folder's photos, against CLIP alone searching the folder for the caption),
  and five files named "passport scan NN.png" (how many of the top 5 they are);
- names: ten photos each described by a name phrase ("Zoe", "Bob's birthday", "外婆家"...), the name as
  the query (R@1; each name describes one photo); mixed queries (a name plus a scene's caption) over eight photos described by the name alone,
  and eight more described by the name with other words;
- stability: the first results at top-k 1, 3 and 10 (the same list?), and the same photos indexed twice in
  another order (the same ranking?);
- duplicates: see bench/duplicates.py.

The table goes to stdout and bench/out/relevance.md (README quotes it).
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from make_scenes import Scene, captions, random_scene, render  # noqa: E402

from image_search import ImageSearchEngine, SearchFilter, SearchResult  # noqa: E402

MODEL = "shapes-tiny::v1"
OUT = ROOT / "bench" / "out"
FOLDERS = {"en": ["Summer 2019", "Beach", "Camera roll", "Paris 2020", "Grandma", "Birthday party", "Downloads", "Hiking"],
           "zh": ["夏天", "海边", "相机胶卷", "巴黎", "外婆", "生日聚会", "下载", "爬山"]}
KYOTO = {"en": "2019-06 Kyoto", "zh": "2019年6月 京都"}
KYOTO_WORD = {"en": "Kyoto", "zh": "京都"}
NAMES = {"en": [("Zoe", "Zoe"), ("Bob's birthday", "Bob"), ("Charlie at the zoo", "Charlie"), ("Grandma Rose", "Rose"),
                ("Uncle Tom's wedding", "wedding"), ("Max the dog", "Max"), ("Emma's graduation", "graduation"),
                ("Lake Tahoe", "Tahoe"), ("Noah and Liam", "Liam"), ("receipt 4471", "receipt")],
         "zh": [("外婆家", "外婆家"), ("张伟的生日", "张伟"), ("东坡肉", "东坡肉"), ("妈妈的花园", "花园"), ("西湖", "西湖"),
                ("小明毕业", "毕业"), ("奶奶", "奶奶"), ("黄山之旅", "黄山"), ("李雷和韩梅梅", "韩梅梅"), ("发票", "发票")]}
MIXED_NAME = {"en": ("Alice", "Alice on holiday with friends"), "zh": ("小红", "小红和朋友去旅行")}


@dataclass
class Row:
    case: str
    values: dict[str, str] = field(default_factory=dict)


def make_scenes(count: int, seed: int) -> list[Scene]:
    rng = random.Random(seed)
    return [random_scene(rng) for _ in range(count)]


def caption(scene: Scene, lang: str) -> str:
    return captions(scene)[lang][0]


class Library:
    """A folder tree of rendered scenes, indexed into one collection of a Lite database."""

    def __init__(self, root: Path, database: str, name: str):
        self.root, self.database, self.name = root, database, name
        self.paths: list[str] = []  # absolute, one per scene
        self.descriptions: dict[str, str] = {}

    def add(self, scene: Scene, relative: str) -> None:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        render(scene).save(path)
        self.paths.append(str(path))

    def engines(self) -> tuple[ImageSearchEngine, ImageSearchEngine]:
        common = {"model_name": MODEL, "milvus_uri": self.database, "collection_name": self.name, "device": "cpu"}
        return ImageSearchEngine(**common), ImageSearchEngine(**common, text_match="off")

    def index(self, order: Sequence[str] | None = None) -> None:
        with ImageSearchEngine(model_name=MODEL, milvus_uri=self.database, collection_name=self.name, device="cpu") as engine:
            if order is None:
                engine.index_directory(self.root, self.descriptions)
            else:  # a file at a time, in the given order: the rows are written in another order
                for start in range(0, len(order), 50):
                    engine.index_images(order[start : start + 50], self.descriptions)


def ranks(results: Sequence[Sequence[SearchResult]], targets: Sequence[str]) -> list[int]:
    """1-based rank of each query's target, 0 when it is not in the list."""
    return [next((n for n, r in enumerate(found, 1) if r.path == target), 0) for found, target in zip(results, targets, strict=True)]


def recall(rank_list: list[int]) -> dict[str, float]:
    n = len(rank_list)
    return {"R@1": sum(r == 1 for r in rank_list) / n, "R@5": sum(1 <= r <= 5 for r in rank_list) / n,
            "MRR": sum(1 / r for r in rank_list if r) / n}


def fmt(values: dict[str, float]) -> str:
    return " / ".join(f"{values[k]:.3f}" for k in ("R@1", "R@5", "MRR"))


def search_all(engine: ImageSearchEngine, queries: Sequence[str], top_k: int,
               search_filter: SearchFilter | None = None) -> list[list]:
    found = []
    for start in range(0, len(queries), 64):
        found += engine.search_batch(list(queries[start : start + 64]), top_k=top_k, search_filter=search_filter)
    return found


def visual_cases(work: Path, seed: int, count: int, rows: list[Row], langs: Sequence[str]) -> None:
    scenes = make_scenes(count, seed)
    rng = random.Random(seed + 1)
    folder_of = [rng.randrange(len(FOLDERS["en"])) for _ in scenes]
    for lang in langs:
        shares = [("none", 0.0)] + [(kind, share) for kind in ("own", "unrelated") for share in (0.01, 0.1, 1.0)]
        for kind, share in shares:
            name = f"visual_{lang}_{kind}_{int(share * 100)}"
            library = Library(work / name, str(work / "relevance.db"), name)
            for i, scene in enumerate(scenes):
                library.add(scene, f"{FOLDERS[lang][folder_of[i]]}/IMG_{i:04d}.png")
            described = random.Random(seed + 2).sample(range(count), round(share * count))
            others = list(range(count))
            random.Random(seed + 3).shuffle(others)
            for i in described:
                j = i if kind == "own" else next(k for k in others[i:] + others[:i] if caption(scenes[k], lang) != caption(scenes[i], lang))
                library.descriptions[library.paths[i]] = caption(scenes[j], lang)
            library.index()
            fused, clip = library.engines()
            queries = [caption(s, lang) for s in scenes]
            with fused, clip:
                a, b = recall(ranks(search_all(fused, queries, 10), library.paths)), recall(ranks(search_all(clip, queries, 10), library.paths))
            label = "no descriptions" if kind == "none" else f"{int(share * 100)} % described, {kind} captions"
            rows.append(Row(f"visual ({lang}): {label}", {"words auto": fmt(a), "CLIP alone": fmt(b),
                                                          "ΔR@1 / ΔR@5": f"{a['R@1'] - b['R@1']:+.3f} / {a['R@5'] - b['R@5']:+.3f}"}))
            print(rows[-1].case, rows[-1].values, flush=True)


def folder_cases(work: Path, seed: int, rows: list[Row], langs: Sequence[str]) -> None:
    scenes = make_scenes(200, seed + 10)
    for lang in langs:
        name = f"folders_{lang}"
        library = Library(work / name, str(work / "relevance.db"), name)
        kyoto: list[int] = []
        for i, scene in enumerate(scenes):
            if i < 60:
                library.add(scene, f"trips/{KYOTO[lang]}/IMG_{i:04d}.png")
                kyoto.append(i)
            elif i < 65:
                library.add(scene, f"{FOLDERS[lang][6]}/passport scan {i - 59:02d}.png")
            else:
                library.add(scene, f"{FOLDERS[lang][i % len(FOLDERS[lang])]}/IMG_{i:04d}.png")
        library.index()
        fused, clip = library.engines()
        in_folder = {library.paths[i] for i in kyoto}
        with fused, clip:
            for query in (KYOTO[lang], KYOTO_WORD[lang]):
                top = [fused.search(query, top_k=10), clip.search(query, top_k=10)]
                rows.append(Row(f"folders ({lang}): query {query!r}, top 10 from the 60-photo folder",
                                {"words auto": f"{sum(r.path in in_folder for r in top[0])}/10",
                                 "CLIP alone": f"{sum(r.path in in_folder for r in top[1])}/10"}))
                print(rows[-1].case, rows[-1].values, flush=True)
            passports = {library.paths[i] for i in range(60, 65)}
            top = [fused.search("passport scan", top_k=5), clip.search("passport scan", top_k=5)]
            rows.append(Row(f"folders ({lang}): file names, query 'passport scan', top 5 of the 5 files",
                            {"words auto": f"{sum(r.path in passports for r in top[0])}/5",
                             "CLIP alone": f"{sum(r.path in passports for r in top[1])}/5"}))
            queries = [f"{KYOTO_WORD[lang]} {caption(scenes[i], lang)}" for i in kyoto]
            targets = [library.paths[i] for i in kyoto]
            found = search_all(fused, queries, 10)
            inside = SearchFilter(path_prefix=str(library.root / "trips" / KYOTO[lang]) + "/")
            ideal = search_all(clip, [caption(scenes[i], lang) for i in kyoto], 10, inside)
            rows.append(Row(f"folders ({lang}): word + caption ('{queries[0]}'), the scene among the folder's photos",
                            {"words auto": fmt(recall(ranks(found, targets))),
                             "CLIP alone": fmt(recall(ranks(search_all(clip, queries, 10), targets))),
                             "target (CLIP in the folder)": fmt(recall(ranks(ideal, targets))),
                             "top 10 in folder": f"{sum(r.path in in_folder for f in found for r in f) / (10 * len(found)):.2f}"}))
            print(rows[-1].case, rows[-1].values, flush=True)


def name_cases(work: Path, seed: int, rows: list[Row], langs: Sequence[str]) -> None:
    scenes = make_scenes(200, seed + 20)
    for lang in langs:
        name = f"names_{lang}"
        library = Library(work / name, str(work / "relevance.db"), name)
        for i, scene in enumerate(scenes):
            library.add(scene, f"{FOLDERS[lang][i % len(FOLDERS[lang])]}/IMG_{i:04d}.png")
        named = NAMES[lang]
        for (description, _), i in zip(named, range(0, 100, 10), strict=False):
            library.descriptions[library.paths[i]] = description
        alone, longer = range(100, 108), range(108, 116)
        for i in alone:
            library.descriptions[library.paths[i]] = MIXED_NAME[lang][0]
        for i in longer:
            library.descriptions[library.paths[i]] = MIXED_NAME[lang][1]
        library.index()
        fused, clip = library.engines()
        with fused, clip:
            queries, targets = [q for _, q in named], [library.paths[i] for _, i in zip(named, range(0, 100, 10), strict=False)]
            rows.append(Row(f"names ({lang}): the name alone ('{queries[0]}', '{queries[1]}'...), its photo",
                            {"words auto": fmt(recall(ranks(search_all(fused, queries, 10), targets))),
                             "CLIP alone": fmt(recall(ranks(search_all(clip, queries, 10), targets)))}))
            print(rows[-1].case, rows[-1].values, flush=True)
            for label, members in (("described by the name alone", alone), ("described by the name and other words", longer)):
                queries = [f"{MIXED_NAME[lang][0]} {caption(scenes[i], lang)}" for i in members]
                targets = [library.paths[i] for i in members]
                pool = {library.paths[j] for j in (*alone, *longer)}
                # CLIP alone over the name's photos: the order the visual part should give
                ideal = [[r for r in clip.search(caption(scenes[i], lang), top_k=1000) if r.path in pool] for i in members]
                rows.append(Row(f"names ({lang}): mixed ('{queries[0]}'), photos {label}",
                                {"words auto": fmt(recall(ranks(search_all(fused, queries, 10), targets))),
                                 "CLIP alone": fmt(recall(ranks(search_all(clip, queries, 10), targets))),
                                 "target (CLIP among the name's photos)": fmt(recall(ranks(ideal, targets)))}))
                print(rows[-1].case, rows[-1].values, flush=True)


def stability_cases(work: Path, seed: int, rows: list[Row]) -> None:
    scenes = make_scenes(300, seed + 30)
    databases = []
    for build in ("a", "b"):
        name = f"stability_{build}"
        library = Library(work / "stability", str(work / f"stability_{build}.db"), name)
        library.paths = []
        for i, scene in enumerate(scenes):
            if build == "a":
                library.add(scene, f"{FOLDERS['en'][i % 8]}/IMG_{i:04d}.png")
            else:
                library.paths.append(str(work / "stability" / f"{FOLDERS['en'][i % 8]}/IMG_{i:04d}.png"))
        for i in random.Random(seed + 31).sample(range(300), 30):
            library.descriptions[library.paths[i]] = caption(scenes[(i + 7) % 300], "en")
        for i in range(0, 300, 37):
            library.descriptions[library.paths[i]] = "Alice"
        library.index(order=None if build == "a" else list(reversed(library.paths)))
        databases.append(library)
    queries = [caption(s, "en") for s in scenes[:100]] + ["Alice", "Beach", "Alice a small red circle", "Summer 2019"]
    same_first = same_prefix = 0
    fused_a = databases[0].engines()[0]
    with fused_a:
        for query in queries:
            lists = {k: [r.id for r in fused_a.search(query, top_k=k)] for k in (1, 3, 10)}
            same_first += lists[1][0] == lists[10][0]
            same_prefix += lists[3] == lists[10][:3]
    rows.append(Row(f"stability: first result the same at top-k 1 and 10; first 3 the same at top-k 3 and 10 ({len(queries)} queries)",
                    {"words auto": f"{same_first}/{len(queries)}; {same_prefix}/{len(queries)}"}))
    print(rows[-1].case, rows[-1].values, flush=True)
    engines = [db.engines() for db in databases]
    try:
        for column, position in (("words auto", 0), ("CLIP alone", 1)):
            a = search_all(engines[0][position], queries, 10)
            b = search_all(engines[1][position], queries, 10)
            same = sum([r.path for r in x] == [r.path for r in y] for x, y in zip(a, b, strict=True))
            rows.append(Row(f"stability: the same photos indexed twice in another order, identical top 10 ({column})",
                            {column: f"{same}/{len(queries)}"}))
            print(rows[-1].case, rows[-1].values, flush=True)
    finally:
        for pair in engines:
            for engine in pair:
                engine.close()


def write_table(rows: list[Row], seed: int, seconds: float) -> str:
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row.values if c not in columns]
    lines = [f"Relevance (bench/relevance.py, seed {seed}, model {MODEL}, Milvus Lite; R@1 / R@5 / MRR; {seconds:.0f} s)", "",
             "| case | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    lines += ["| " + row.case + " | " + " | ".join(row.values.get(c, "") for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=20261207, help="scenes the test model never saw (it trained on seed 0)")
    parser.add_argument("--scenes", type=int, default=500, help="scenes in the visual cases")
    parser.add_argument("--only", default="visual,folders,names,stability", help="comma-separated cases")
    parser.add_argument("--langs", default="en,zh")
    parser.add_argument("--out", type=Path, default=OUT / "relevance.md")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    langs = args.langs.split(",")
    started = time.perf_counter()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="relevance-") as scratch:
        work = Path(scratch)
        cases: dict[str, Callable[[], None]] = {"visual": lambda: visual_cases(work, args.seed, args.scenes, rows, langs),
                 "folders": lambda: folder_cases(work, args.seed, rows, langs),
                 "names": lambda: name_cases(work, args.seed, rows, langs),
                 "stability": lambda: stability_cases(work, args.seed, rows)}
        for case in args.only.split(","):
            if case == "duplicates":
                from duplicates import duplicate_cases

                duplicate_cases(work, args.seed, rows)
            else:
                cases[case]()
        shutil.rmtree(work, ignore_errors=True)
    table = write_table(rows, args.seed, time.perf_counter() - started)
    print("\n" + table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
