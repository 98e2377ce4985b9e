"""Mutation testing of the core modules with mutmut (slow: not part of CI).

  python scripts/mutation.py [--run] [MODULE ...]

`--run` runs mutmut first (`[tool.mutmut]` in pyproject.toml names the modules and the test
files; results are kept in mutants/ and only changed functions run again), then prints a table
per module: mutants, killed, survived, timeouts, not checked, and the score (killed ÷ mutants
run); `--survivors` lists each survivor's diff. `--sample K` runs one mutant in K of every
module, chosen by a hash of its name (the same sample each time; mutants with a result are not
run again unless `--again`, survivors and timeouts again with `--survivors-again`). Each
mutant's tests run fastest first (mutmut stops at the first failure). Torch runs on one thread:
mutmut forks its test process, and a forked child of a process whose OpenMP pool has started
hangs (what the first attempt's timeouts were).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import zlib
from collections import Counter, defaultdict

MODULES = ["facevid.io.fvl", "facevid.model.quantize", "facevid.sampling", "facevid.face.identity",
           "facevid.pipeline", "facevid.face.crop", "facevid.tasks.transfer", "facevid.eval.reenactment",
           "facevid.face.track"]


# mutmut, its tests run fastest first: each mutant runs the tests that cover its function and stops
# at the first failure (-x), so a mutant a 0.1-s test kills need not wait for a 40-s one first
_FASTEST_FIRST = """
import os
import sys
from mutmut.__main__ import cli
from mutmut.runners import harness
from mutmut.state import state

regular = harness.PytestRunner._pytest_args_regular_run

def fastest_first(self, tests):
    return regular(self, sorted(tests, key=lambda test: state().duration_by_test.get(test, 0.0)))

harness.PytestRunner._pytest_args_regular_run = fastest_first
if os.environ.get("MUTATION_TRUST_CLEAN"):   # the unmutated suite is known to pass: skip mutmut's clean run
    from mutmut.workers import isolation
    for runner in vars(isolation).values():
        if isinstance(runner, type) and "run_clean_tests" in vars(runner):
            runner.run_clean_tests = lambda self, tests: 0
sys.argv[0] = "mutmut"
cli()
"""
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "HF_HUB_OFFLINE": "1"}


def mutmut(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "mutmut", *args], env=ENV, text=True, capture_output=True)
    if done.returncode:
        sys.exit(f"mutmut {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return done.stdout


def mutmut_run(*args: str, trust_clean: bool = False) -> None:
    """`mutmut run ARGS`, fastest tests first, its progress shown as it goes (`trust_clean`: skip
    its run of the unmutated tests); a failure is reported, not fatal (mutmut exits non-zero
    when it finds survivors too)."""
    env = {**ENV, "MUTATION_TRUST_CLEAN": "1"} if trust_clean else ENV
    done = subprocess.run([sys.executable, "-c", _FASTEST_FIRST, "run", *args], env=env)
    if done.returncode:
        print(f"mutmut run exited with {done.returncode}", file=sys.stderr)


def results() -> dict[str, dict[str, str]]:
    """{module: {mutant: status}} over every mutant mutmut knows."""
    out: dict[str, dict[str, str]] = defaultdict(dict)
    for line in mutmut("results", "--all", "true").splitlines():
        name, _, status = line.strip().rpartition(": ")
        module = name.split(".x")[0] if ".x" in name else name
        out[module][name] = status
    return out


def in_sample(name: str, k: int) -> bool:
    return k <= 1 or zlib.crc32(name.encode()) % k == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", default=MODULES)
    parser.add_argument("--run", action="store_true", help="run mutmut on the modules first")
    parser.add_argument("--survivors", action="store_true", help="print each survivor's diff")
    parser.add_argument("--children", type=int, default=2)
    parser.add_argument("--sample", type=int, default=1, metavar="K", help="run (and count) one mutant in K")
    parser.add_argument("--again", action="store_true", help="with --sample: rerun mutants that have a result")
    parser.add_argument("--survivors-again", action="store_true",
                        help="with --sample: rerun the survivors and timeouts too (after new tests)")
    parser.add_argument("--trust-clean", action="store_true",
                        help="skip mutmut's run of the unmutated tests (they are known to pass)")
    args = parser.parse_args()
    if args.run and args.sample > 1:
        # generate the mutants and the test statistics (a pattern that names no mutant stops there);
        # the clean tests then ran once, and the sample's run need not repeat them
        fresh = not os.path.exists("mutants/mutmut-stats.json")
        if fresh:
            mutmut_run("--max-children", str(args.children), "facevid.no_such_module.*")
        names = [name for module in args.modules for name, status in results().get(module, {}).items()
                 if in_sample(name, args.sample) and (args.again or status == "not checked" or
                                                      (args.survivors_again and status in ("survived", "timeout")))]
        print(f"{len(names)} mutants to run", flush=True)
        if names:
            mutmut_run("--max-children", str(args.children), *names, trust_clean=fresh or args.trust_clean)
    elif args.run:
        for module in args.modules:
            mutmut_run("--max-children", str(args.children), f"{module}.*")
    table = {module: {name: status for name, status in mutants.items() if in_sample(name, args.sample)}
             for module, mutants in results().items()}
    print("| module | mutants | killed | survived | timeout | not checked | killed ÷ run |\n"
          "|---|---|---|---|---|---|---|")
    def row(name: str, counts: Counter) -> str:
        run = sum(counts.values()) - counts["not checked"]
        return (f"| {name} | {sum(counts.values())} | {counts['killed']} | {counts['survived']} | {counts['timeout']} | "
                f"{counts['not checked']} | {counts['killed'] / max(run, 1):.1%} |")

    total: Counter = Counter()
    for module in args.modules:
        counts = Counter(table.get(module, {}).values())
        total.update(counts)
        print(row(module, counts))
    print(row("all", total))
    if args.survivors:
        for module in args.modules:
            for name, status in table.get(module, {}).items():
                if status in ("survived", "timeout"):
                    diff = [line for line in mutmut("show", name).splitlines()
                            if line[:1] in "-+" and line[:3] not in ("---", "+++")]
                    print(f"\n{name} ({status})\n" + "\n".join(diff))


if __name__ == "__main__":
    main()
