"""``python -m bench.suite``: the one command. Prints progress to stderr, the table to stdout.

Run it from the repository root: ``.venv/bin/python -m bench.suite --quick``.
"""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bench.suite import machine, many, matrix, models, report, targets
from bench.suite.plan import Plan, parse
from bench.suite.results import Results


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(plan: Plan) -> Results:
    results = Results()
    for name in plan.models:
        try:
            model = models.ensure(name, log=log)
            matrix.run_model(model, plan, results, log)
        except Exception as exc:  # one model failing must not cost the others' figures
            results.skipped[(name, "every contender")] = f"{type(exc).__name__}: {exc}"
            log(f"{name}: failed, going on with the others: {exc}")
    if plan.many_models:
        try:
            results.many = many.run(models.ensure("mobilenet_v2", log=log), plan.many_models,
                                    steady_seconds=max(plan.seconds, 3.0), swaps=3,
                                    extra=[], log=log)
        except Exception as exc:  # as above: the other figures stand
            results.skipped[("many models", "every contender")] = f"{type(exc).__name__}: {exc}"
            log(f"many models: failed: {exc}")
    return results


def main(argv: Sequence[str]) -> int:
    plan = parse(argv)
    estimate = plan.estimate_seconds()
    log(f"models {', '.join(plan.models)}; clients {plan.concurrency}; "
        f"{len(plan.all_contenders)} contenders; about {estimate / 60:.0f} min "
        f"(plus building models not yet in {models.CACHE})")
    started = time.monotonic()
    load_before = machine.load_average()
    results = run(plan)
    judged = targets.judge(results, plan)
    about = [*machine.describe(),
             f"load average before {load_before}, after {machine.load_average()}; "
             f"run took {(time.monotonic() - started) / 60:.1f} min"]
    command = ".venv/bin/python -m bench.suite " + shlex.join(argv)
    print(report.markdown(results, plan, judged, about, command.strip()))
    if plan.json_path:
        Path(plan.json_path).write_text(report.to_json(results, plan, judged, about))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
