"""Mutation testing with mutmut: how many deliberate small bugs the tests catch, per module.

    python bench/mutation_report.py            # mutate what [tool.mutmut] lists, run, print the table
    python bench/mutation_report.py --report   # only print the table of the last run (mutants/ kept)
    python bench/mutation_report.py --survivors imsearch.indexing.scan   # list one module's survivors
    python bench/mutation_report.py --unexplained   # survivors with no reason in bench/mutation-survivors.md
    python bench/mutation_report.py --resume 'milvus_store*'   # only those not yet caught (after new tests, or a cut run)
    python bench/mutation_report.py --reasons   # each written reason with the diffs of the survivors it names
    python bench/mutation_report.py --resume --sample 60 'milvus_store*'   # 60 random ones not yet checked, per module
    python bench/mutation_report.py --resume --unchecked 'image_search*'   # never checked only, not earlier survivors
    python bench/mutation_report.py --save     # keep a killed run's verdicts in bench/mutation-state/

Results outlive the scratch folder: after each run the verdicts (mutants/**/*.meta) and mutmut's map from
tests to functions (mutants/mutmut-stats.json) are copied to bench/mutation-state/, which is committed, and
a fresh clone restores them before its first mutmut call. A whole run takes many hours on 2 cores, so it
is continued across sessions rather than repeated. mutmut itself resets the verdicts of every function
whose source changed (it keeps a hash per function), so a restored verdict always belongs to today's code.

bench/mutation-survivors.md gives, for the modules it covers, why each surviving mutant is left: lines
bullets "- `PATTERN`, `PATTERN`: reason" (continued on indented lines), each PATTERN a mutant name with
shell wildcards (`*`, `?`, `[...]`).

mutmut copies the package into mutants/, switches one mutant on at a time and runs the tests that
executed the mutated function (in process: tests that reach the code through a child process cannot
kill its mutants, so the configured tests are the in-process ones). Statuses: killed (a test failed,
good), survived (every test passed: a bug the tests would let through), no tests (no configured test
runs that function), timeout (the mutant made a test hang; counted as caught).
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MUTMUT = [sys.executable, "-m", "mutmut"]
# Each mutant runs in a fresh pytest session: the engine tests run the test model on ONNX Runtime (no
# torch import) from an export made once here and kept between runs (conftest honours both variables).
EXPORTS = ROOT / ".mutation-cache"
TEST_ENVIRONMENT = {"IMAGE_SEARCH_TEST_RUNTIME": "onnx", "IMAGE_SEARCH_TEST_CACHE": str(EXPORTS)}


def export_test_model() -> None:
    """The test model's ONNX towers in the kept cache (a few seconds, once)."""
    code = ("from PIL import Image; from clip_encoder import CLIPEncoder; "
            "e = CLIPEncoder(model_name='shapes-tiny::v1', device='cpu', runtime='onnx'); "
            "e.encode_texts(['a red circle']); e.encode_images([Image.new('RGB', (64, 64))]); e.close()")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, env={**os.environ, "IMAGE_SEARCH_CACHE": str(EXPORTS)})


STATE = ROOT / "bench" / "mutation-state"
SCRATCH = ROOT / "mutants"


def restore_state() -> None:
    """Put the committed verdicts where mutmut reads them, for each file the scratch folder lacks."""
    if not STATE.is_dir():
        return
    for kept in STATE.rglob("*"):
        if kept.is_file():
            target = SCRATCH / kept.relative_to(STATE)
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(kept, target)


def save_state() -> None:
    """Copy the verdicts and the test map out of the scratch folder, to be committed."""
    kept = [*SCRATCH.rglob("*.meta"), SCRATCH / "mutmut-stats.json"]
    for path in kept:
        if path.is_file():
            target = STATE / path.relative_to(SCRATCH)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)


LINE = re.compile(r"^\s*(?P<name>[\w.]+?)\.x\S*__mutmut_\d+: (?P<status>.+)$")


def mutant_statuses() -> dict[str, str]:
    """Each mutant's status in the last runs (killed, survived, no tests, not checked...)."""
    done = subprocess.run([*MUTMUT, "results", "--all", "true"], cwd=ROOT, capture_output=True, text=True, check=True)
    found = {}
    for line in done.stdout.splitlines():
        name, _, status = line.strip().rpartition(": ")
        if "__mutmut_" in name:
            found[name] = status.strip()
    return found


def results() -> dict[str, collections.Counter[str]]:
    done = subprocess.run([*MUTMUT, "results", "--all", "true"], cwd=ROOT, capture_output=True, text=True, check=True)
    per_module: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for line in done.stdout.splitlines():
        match = LINE.match(line)
        if match:
            per_module[match["name"]][match["status"].strip()] += 1
    return per_module


def survivors(module: str) -> list[str]:
    done = subprocess.run([*MUTMUT, "results"], cwd=ROOT, capture_output=True, text=True, check=True)
    return [line.split(":")[0].strip() for line in done.stdout.splitlines() if line.strip().startswith(module) and "survived" in line]


REASONS = ROOT / "bench" / "mutation-survivors.md"
REASON_LINE = re.compile(r"^- `(?P<pattern>[^`]+)`")


def unexplained() -> tuple[list[str], list[str]]:
    """Survivors of the modules bench/mutation-survivors.md covers that no reason there matches, and the modules."""
    import fnmatch

    text = REASONS.read_text(encoding="utf-8")
    covered = re.findall(r"^## (\S+)", text, flags=re.MULTILINE)
    # each bullet with its indented continuation lines; its patterns are the backticked mutant names
    bullets = re.split(r"\n(?=- )", text)
    patterns = [pattern for bullet in bullets if REASON_LINE.match(bullet)
                for pattern in re.findall(r"`([^`]*__mutmut_[^`]*)`", bullet)]
    left = []
    for module in covered:
        for name in survivors(module):
            if not any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns):
                left.append(name)
    return left, covered


def show_reasons() -> None:
    """Each reason of bench/mutation-survivors.md followed by the diff of every survivor it names: a reason
    is read against the mutants it explains now (numbers move when a function changes); one that names
    no survivor is flagged as stale."""
    import fnmatch

    text = REASONS.read_text(encoding="utf-8")
    left = [name for module in re.findall(r"^## (\S+)", text, flags=re.MULTILINE) for name in survivors(module)]
    for bullet in re.split(r"\n(?=- )", text):
        if not REASON_LINE.match(bullet):
            continue
        patterns = re.findall(r"`([^`]*__mutmut_[^`]*)`", bullet)
        named = [n for n in left if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
        print(bullet.strip().split("\n")[0][:160] + ("" if named else "\n    STALE: names no surviving mutant"))
        for name in named:
            diff = subprocess.run([*MUTMUT, "show", name], cwd=ROOT, capture_output=True, text=True).stdout
            print("   ", name.split(".")[-1], "|", " ".join(line[1:].strip() for line in diff.splitlines()
                                                            if line.startswith(("-", "+")) and not line.startswith(("---", "+++")))[:220])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--report", action="store_true", help="print the last run's table without running")
    parser.add_argument("--survivors", metavar="MODULE", help="list the surviving mutants of one module")
    parser.add_argument("--children", type=int, default=2)
    parser.add_argument("--unexplained", action="store_true", help="survivors without a reason in bench/mutation-survivors.md")
    parser.add_argument("--reasons", action="store_true", help="each written reason with the diffs of the survivors it names")
    parser.add_argument("--resume", action="store_true",
                        help="run only the mutants (of those named) that no test has caught yet: a run cut short, or new tests")
    parser.add_argument("--unchecked", action="store_true",
                        help="with --resume: only mutants never checked, not earlier survivors (a survivor re-runs every "
                             "test of its function, the slowest kind; re-run them after writing their tests)")
    parser.add_argument("--sample", type=int, metavar="N",
                        help="with --resume: N of each module's not-yet-checked mutants, drawn at random (seed 16), plus all "
                             "its earlier survivors; a whole run takes hours, a sample gives an unbiased catch rate")
    parser.add_argument("--save", action="store_true",
                        help="copy the verdicts to bench/mutation-state/ (after a run that was killed before it could)")
    parser.add_argument("mutants", nargs="*", help="only these mutants (names or wildcards, as mutmut run takes them)")
    args = parser.parse_args()
    if importlib.util.find_spec("mutmut") is None:
        sys.exit(f"mutmut is not installed in {sys.executable}: pip install -r requirements-dev.txt "
                 "(it pins mutmut 3.8, the version that wrote bench/mutation-state/)")
    restore_state()
    if args.save:
        save_state()
        return
    if args.resume:
        import fnmatch
        import random

        patterns = args.mutants or ["*"]
        pending = {name: status for name, status in mutant_statuses().items() if status not in ("killed", "timeout")
                   and any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)
                   and (status == "not checked" or not args.unchecked)}
        if args.sample:  # mutmut runs the cheapest first: a cut run says little of the expensive rest
            unchecked: dict[str, list[str]] = collections.defaultdict(list)
            for name, status in sorted(pending.items()):
                if status == "not checked":
                    unchecked[LINE.match(f"{name}: x")["name"]].append(name)  # type: ignore[index]
            drawn = {name for names in unchecked.values() for name in random.Random(16).sample(names, min(args.sample, len(names)))}
            pending = {name: status for name, status in pending.items() if status != "not checked" or name in drawn}
        args.mutants = sorted(pending)
        print(f"{len(args.mutants)} mutants not yet caught", file=sys.stderr)
        if not args.mutants:
            return
    if args.reasons:
        show_reasons()
        return
    if args.unexplained:
        left, covered = unexplained()
        for name in left:
            print(name)
        print(f"{len(left)} surviving mutants without a written reason in {', '.join(covered)}", file=sys.stderr)
        sys.exit(1 if left else 0)
    if args.survivors:
        for name in survivors(args.survivors):
            print(name)
        return
    if not args.report:
        export_test_model()
        run = subprocess.run([*MUTMUT, "run", "--max-children", str(args.children), *args.mutants], cwd=ROOT, check=False,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, **TEST_ENVIRONMENT})
        save_state()  # a run cut short by a timeout still saves what it checked (mutmut writes as it goes)
        if run.returncode != 0:  # e.g. a test that fails without any mutant: mutmut stops before the first
            print(run.stdout[-3000:], file=sys.stderr)
            sys.exit(run.returncode)
    table = results()
    statuses = ["killed", "timeout", "survived", "no tests", "not checked"]
    print("| module | " + " | ".join(statuses) + " | caught |")
    print("|---|" + "---|" * (len(statuses) + 1))
    total: collections.Counter[str] = collections.Counter()
    for module in sorted(table):
        counts = table[module]
        total.update(counts)
        tested = counts["killed"] + counts["timeout"] + counts["survived"]
        caught = f"{(counts['killed'] + counts['timeout']) / tested:.0%}" if tested else "-"
        print(f"| {module} | " + " | ".join(str(counts[s]) for s in statuses) + f" | {caught} |")
    tested = total["killed"] + total["timeout"] + total["survived"]
    print("| all | " + " | ".join(str(total[s]) for s in statuses) +
          f" | {(total['killed'] + total['timeout']) / tested:.0%} |" if tested else "| all | - |")


if __name__ == "__main__":
    main()
