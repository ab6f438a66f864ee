"""Time the source classifier's training on 100,000 simulated catalogue sources.

Run ``python benchmarks/classify_speed.py [--n 100000] [--threads 1] [--max-iter 60] [--cv]``. Prints::

    classify_speed: trained on 100,000 sources (12 features, 4 classes) in 6.1 s (target <= 30 s); ...

Target (issue 8): training on 100,000 sources in ≤ 30 s on 2 cores. "Training" is the final fit of
:func:`xmine.classify.train_classifier` (reading and cleaning the table, building the features,
imputation and gradient boosting); ``--cv`` also times a run with the 5-fold cross-validation
(five more fits on 80 % of the rows each).

Measured 2026-11-23 on the shared 2-core development machine (load 4–6 from other jobs): 8.5–17.7 s
for the fit (60 iterations, 1 thread); with 5-fold CV 39 s; CV accuracy 0.890 on the simulated set.
The default is one OpenMP thread: on the shared 2-core development machine two threads were up to
ten times slower (OpenMP barriers waiting for a core); ``--threads 2`` measures that.
"""

from __future__ import annotations

import argparse
import time

from xmine.classify import train_classifier
from xmine.simulate.labels import make_labelled_sources


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="sources (default 100000)")
    parser.add_argument("--threads", type=int, default=1, help="OpenMP threads (default 1)")
    parser.add_argument("--max-iter", type=int, default=60, help="boosting iterations (default 60)")
    parser.add_argument("--cv", action="store_true", help="also run the 5-fold cross-validation")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    t0 = time.perf_counter()
    table = make_labelled_sources(args.n, seed=args.seed)
    t_sim = time.perf_counter() - t0
    t0 = time.perf_counter()
    trained = train_classifier(table, "class", seed=args.seed, max_iter=args.max_iter, n_threads=args.threads,
                               cross_validate=False)
    t_train = time.perf_counter() - t0
    cv = ""
    if args.cv:
        t0 = time.perf_counter()
        rep = train_classifier(table, "class", seed=args.seed, max_iter=args.max_iter, n_threads=args.threads).report
        cv = f"; with 5-fold CV {time.perf_counter() - t0:.1f} s, CV accuracy {rep.accuracy:.3f}"
    status = "OK" if t_train <= 30.0 else "SLOWER THAN TARGET"
    print(f"classify_speed: trained on {args.n:,} sources ({len(trained.features)} features, "
          f"{len(trained.classes)} classes) in {t_train:.1f} s (target <= 30 s, {status}; "
          f"{args.threads} thread(s), {args.max_iter} iterations){cv}; simulating the table took {t_sim:.1f} s")


if __name__ == "__main__":
    main()
