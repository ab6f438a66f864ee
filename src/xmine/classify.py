"""Source classification over catalogue properties with scikit-learn.

A user supplies a labelled table (CSV, ECSV, FITS, VOTable, Parquet, or a table
in the DuckDB store) and names its label column. xmine builds a feature matrix
from the catalogue properties it finds (hardness ratios, variability
probabilities and indices, log₁₀ of fluxes, significance, extent, and
multiwavelength columns such as ``*_mag``), trains a scikit-learn pipeline

``SimpleImputer(median, with missing-value indicators) → HistGradientBoostingClassifier``

reports a stratified k-fold cross-validation (accuracy per fold, confusion
matrix and per-class precision/recall of the out-of-fold predictions), fits the
final model on all labelled rows, predicts class probabilities for any table,
writes them to the store with the model's provenance (features, parameters,
library versions, the training table's SHA-256, CV scores) in one transaction,
and saves the model with joblib (plus a JSON sidecar holding the provenance and
the file's SHA-256, checked on load; a joblib file runs code when loaded, so
load only models you made).

Input format (the real CSC CSV output): sexagesimal ``ra``/``dec`` strings become
degrees, ``TRUE``/``False``-style text becomes booleans, blank fields become NULL,
and pandas' ``.1`` suffix (a column name repeated at the observation level)
becomes ``_obs``. NULL features are imputed (median) and flagged by an indicator
feature, so "not measured" is itself information; a feature with no values at
all in the training table is dropped (and listed in the report).

Approximations: the classes are whatever the user's labels say; cross-validation
treats rows as independent (several detections of one source in different folds
make the scores optimistic — give one row per source).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from astropy.table import MaskedColumn, Table

from xmine.errors import InputError

__all__ = [
    "DEFAULT_FEATURES",
    "ClassifierReport",
    "TrainedClassifier",
    "clean_catalogue_table",
    "feature_matrix",
    "load_model",
    "predict_classes",
    "read_catalogue_table",
    "run_classification",
    "save_model",
    "train_classifier",
    "write_predictions",
]

#: Catalogue properties used when no features are named (those present in the table).
DEFAULT_FEATURES: tuple[str, ...] = (
    "hard_hs", "hard_ms", "hard_hm",
    "var_intra_prob_b", "var_inter_prob_b", "var_intra_index_b", "var_inter_index_b",
    "ks_intra_prob_b", "kp_intra_prob_b", "var_inter_sigma_b",
    "flux_aper_b", "flux_aper90_b", "flux_aper90_s", "flux_aper90_m", "flux_aper90_h", "flux_powlaw",
    "sc_ep_8_flux", "sc_hr1", "sc_hr2", "sc_hr3", "sc_hr4", "sc_var_flag", "sc_extent",
    "significance", "extent_flag", "major_axis", "conf_flag",
    "j_m", "h_m", "k_m",  # 2MASS magnitudes of a cross-match (other *_mag / *mag columns are found by name)
)
_MAG_RE = re.compile(r".*_mag$|.*mag_.*|^[a-z0-9]+mag$", re.IGNORECASE)
_SEXA_RE = re.compile(r"^[+-]?\d{1,3}[ :]\d{1,2}[ :]\d{1,2}(\.\d*)?$")
_TRUE = {"true", "t", "yes", "y"}
_FALSE = {"false", "f", "no", "n"}


# ---------------------------------------------------------------------------- reading tables
def read_catalogue_table(source: Any, *, store: Any = None) -> Table:
    """Read a catalogue table from a file, a store table, or an in-memory table, with clean types.

    Parameters
    ----------
    source : str, Path, astropy.table.Table or pyarrow.Table
        A file (``.csv``, ``.tsv``, ``.ecsv``, ``.fits``/``.fit``/``.fits.gz``,
        ``.xml``/``.vot``/``.votable``, ``.parquet``), a table name in ``store``,
        or a table.
    store : xmine.store.Store, optional
        Where table names are looked up.

    Returns
    -------
    astropy.table.Table
        See :func:`clean_catalogue_table`.

    Raises
    ------
    xmine.errors.InputError
        If the file does not exist or cannot be read as a table.
    """
    import pyarrow as pa

    from xmine.cache import arrow_to_astropy

    if isinstance(source, Table):
        return clean_catalogue_table(source)
    if isinstance(source, pa.Table):
        return clean_catalogue_table(arrow_to_astropy(source))
    text = str(source)
    path = Path(text)
    if not path.exists():
        if store is not None and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", text):
            from xmine.cache import load_table

            return clean_catalogue_table(arrow_to_astropy(load_table(store, text)))
        where = f" or a table in {store.path}" if store is not None else ""
        msg = f"{text}: no such file{where}; give a CSV, ECSV, FITS, VOTable or Parquet file or a cached table name"
        raise InputError(msg)
    name = path.name.lower()
    try:
        if name.endswith(".parquet"):
            import pyarrow.parquet as pq

            table = arrow_to_astropy(pq.read_table(path))
        elif name.endswith(".csv"):
            table = Table.read(path, format="ascii.csv", comment="#")
        elif name.endswith(".tsv"):
            table = Table.read(path, format="ascii.tab", comment="#")
        elif name.endswith((".xml", ".vot", ".votable")):
            table = Table.read(path, format="votable")
        else:
            table = Table.read(path)
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        msg = f"{path}: cannot read a table ({first}); give CSV, ECSV, FITS, VOTable or Parquet"
        raise InputError(msg) from exc
    return clean_catalogue_table(table)


def _strings(col: Any) -> tuple[list[str], np.ndarray]:
    data = np.asarray(col.data if hasattr(col, "data") else col)
    mask = np.ma.getmaskarray(col) if getattr(col, "mask", None) is not None else np.zeros(len(data), dtype=bool)
    vals = []
    for v, m in zip(data.tolist(), mask.tolist(), strict=True):
        if m or v is None:
            vals.append("")
        else:
            vals.append((v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)).strip())
    blank = mask | np.array([v == "" for v in vals], dtype=bool)
    return vals, blank


def _sexagesimal(name: str, vals: list[str], blank: np.ndarray) -> np.ndarray | None:
    low = name.lower()
    is_ra = low == "ra" or low.startswith("ra_") or low.endswith("_ra")
    is_dec = low == "dec" or low.startswith("dec_") or low.endswith("_dec")
    filled = [v for v, b in zip(vals, blank, strict=True) if not b]
    if not (is_ra or is_dec) or not filled or not all(_SEXA_RE.match(v) for v in filled):
        return None
    from astropy.coordinates import Angle

    out = np.full(len(vals), np.nan)
    idx = np.flatnonzero(~blank)
    unit = "hourangle" if is_ra else "deg"
    out[idx] = Angle([vals[i].replace(":", " ") for i in idx], unit=unit).deg
    return out


def clean_catalogue_table(table: Table) -> Table:
    """Return a table with clean types: the messy-CSV rules of the module docstring.

    * column ``x.1`` → ``x_obs`` (pandas' renaming of a repeated name);
    * text columns whose filled values are all true/false words → ``bool`` (blank → masked);
    * ``ra``/``dec``-named text columns in sexagesimal (``11 05 07.45``,
      ``-58:51:05.5``) → degrees (RA in hours);
    * text columns whose filled values are all numbers → ``float64`` (not digit strings
      that are names: leading zeros, or a column named ``*id``/``*_id*``);
    * object columns (VOTable strings) → ``str``; blank text → masked.

    Parameters
    ----------
    table : astropy.table.Table

    Returns
    -------
    astropy.table.Table
    """
    out = Table()
    for name in table.colnames:
        col = table[name]
        new_name = name[:-2] + "_obs" if name.endswith(".1") and name[:-2] + "_obs" not in table.colnames else name
        data = np.asarray(col.data if hasattr(col, "data") else col)
        if data.dtype.kind in "OSU":
            vals, blank = _strings(col)
            filled = {v.lower() for v, b in zip(vals, blank, strict=True) if not b}
            sexa = _sexagesimal(name, vals, blank)
            if filled and filled <= (_TRUE | _FALSE):
                arr = np.array([v.lower() in _TRUE for v in vals], dtype=bool)
                newcol: Any = MaskedColumn(arr, mask=blank) if blank.any() else arr
            elif sexa is not None:
                newcol = MaskedColumn(np.nan_to_num(sexa), mask=blank) if blank.any() else sexa
            elif filled and all(_is_number(v) for v in filled) and not _identifier_like(name, filled):
                arr = np.array([float(v) if not b else np.nan for v, b in zip(vals, blank, strict=True)])
                newcol = MaskedColumn(np.nan_to_num(arr), mask=blank) if blank.any() else arr
            else:
                arr = np.array(vals, dtype=str) if vals else np.array([], dtype="U1")
                newcol = MaskedColumn(arr, mask=blank) if blank.any() else arr
            out[new_name] = newcol
            if sexa is not None:
                out[new_name].unit = "deg"
        else:
            out[new_name] = col
    out.meta.update({k: v for k, v in table.meta.items() if isinstance(v, (str, int, float, bool))})
    return out


def _identifier_like(name: str, filled: set[str]) -> bool:
    """Digit strings that are names (4XMM ``OBS_ID`` ``0901010101``): leading zeros, or an id-like column."""
    low = name.lower()
    return low.endswith("id") or "_id" in low or any(len(v) > 1 and v[0] == "0" and v[1].isdigit() for v in filled)


def _is_number(v: str) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------------------- features
def _column_values(table: Table, name: str) -> np.ndarray:
    col = table[name]
    data = np.asarray(col.data if hasattr(col, "data") else col)
    if data.dtype.kind not in "biuf":
        msg = f"feature column {name!r} is {data.dtype} text, not a number or flag; leave it out of --features"
        raise InputError(msg)
    out = data.astype(np.float64)
    if getattr(col, "mask", None) is not None:
        out = np.where(np.ma.getmaskarray(col), np.nan, out)
    return out


def _auto_features(table: Table, label_column: str | None) -> list[str]:
    lower = {c.lower(): c for c in table.colnames}
    chosen = [lower[f] for f in DEFAULT_FEATURES if f in lower]
    for c in table.colnames:
        if c != label_column and c not in chosen and _MAG_RE.match(c) and \
                np.asarray(table[c]).dtype.kind in "biuf":
            chosen.append(c)
    return chosen


def feature_matrix(table: Table, features: Sequence[str]) -> np.ndarray:
    """Return the float64 feature matrix (NULL → NaN; ``flux*`` columns as log₁₀, flags as 0/1).

    Parameters
    ----------
    table : astropy.table.Table
        Clean table (:func:`clean_catalogue_table`).
    features : sequence of str
        Column names (case-insensitive).

    Raises
    ------
    xmine.errors.InputError
        If columns are missing (all are named) or are text.
    """
    lower = {c.lower(): c for c in table.colnames}
    missing = [f for f in features if f.lower() not in lower]
    if missing:
        msg = (f"feature column(s) {', '.join(missing)} not in the table "
               f"(it has {', '.join(table.colnames[:40])}{'…' if len(table.colnames) > 40 else ''})")
        raise InputError(msg)
    cols = []
    for f in features:
        v = _column_values(table, lower[f.lower()])
        if f.lower().startswith("flux") or f.lower().endswith("_flux"):
            with np.errstate(divide="ignore", invalid="ignore"):
                v = np.where(v > 0, np.log10(np.where(v > 0, v, 1.0)), np.nan)
        cols.append(v)
    return np.column_stack(cols) if cols else np.empty((len(table), 0))


def _labels(table: Table, label_column: str) -> tuple[np.ndarray, np.ndarray]:
    """Return (labels as str, whether each row is labelled)."""
    if label_column not in table.colnames:
        msg = f"label column {label_column!r} not in the table (it has {', '.join(table.colnames[:40])})"
        raise InputError(msg)
    vals, blank = _strings(table[label_column])
    return np.array(vals, dtype=str), ~blank


def _table_sha256(X: np.ndarray, y: np.ndarray, features: Sequence[str]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(list(features)).encode())
    h.update(np.ascontiguousarray(X, dtype="<f8").tobytes())
    h.update("\x1f".join(y.tolist()).encode())
    return h.hexdigest()


def _versions() -> dict[str, str]:
    import joblib
    import sklearn

    from xmine import __version__

    return {"xmine": __version__, "scikit-learn": sklearn.__version__, "numpy": np.__version__,
            "joblib": joblib.__version__}


def _column_name(cls: str) -> str:
    return "prob_" + (re.sub(r"[^A-Za-z0-9_]", "_", cls) or "blank")


# ---------------------------------------------------------------------------- training
@dataclass
class ClassifierReport:
    """Cross-validated performance of a classifier.

    Attributes
    ----------
    classes : list of str
        Class labels, in the order of the matrix rows/columns.
    confusion : numpy.ndarray
        Out-of-fold confusion matrix: row = true class, column = predicted class.
    precision, recall, f1 : dict of str to float
        Per class, from the out-of-fold predictions.
    support : dict of str to int
        Labelled rows per class.
    fold_accuracy : list of float
        Accuracy of each test fold.
    accuracy, balanced_accuracy : float
        Of all out-of-fold predictions.
    """

    classes: list[str]
    confusion: np.ndarray
    precision: dict[str, float]
    recall: dict[str, float]
    f1: dict[str, float]
    support: dict[str, int]
    fold_accuracy: list[float]
    accuracy: float
    balanced_accuracy: float

    def to_dict(self) -> dict[str, Any]:
        """Return the report as plain JSON-able values."""
        return {"classes": self.classes, "confusion": self.confusion.tolist(), "precision": self.precision,
                "recall": self.recall, "f1": self.f1, "support": self.support,
                "fold_accuracy": self.fold_accuracy, "accuracy": self.accuracy,
                "balanced_accuracy": self.balanced_accuracy}

    def rows(self) -> list[tuple[Any, ...]]:
        """Rows ``class, support, precision, recall, f1, predicted as <each class>…`` for printing."""
        return [(c, self.support[c], round(self.precision[c], 3), round(self.recall[c], 3), round(self.f1[c], 3),
                 *map(int, self.confusion[i])) for i, c in enumerate(self.classes)]


@dataclass
class TrainedClassifier:
    """A fitted classification pipeline with what it needs to be reused and trusted.

    Attributes
    ----------
    model : sklearn.pipeline.Pipeline
        Imputer and classifier, fitted on every labelled row.
    features : list of str
        Feature columns, in the model's order.
    classes : list of str
        Class labels (the order of the probability columns).
    label_column : str
        The training table's label column.
    report : ClassifierReport
        Cross-validation.
    provenance : dict
        Features, dropped features, parameters, library versions, training table
        SHA-256 and source, rows, folds, seed, CV scores.
    """

    model: Any
    features: list[str]
    classes: list[str]
    label_column: str
    report: ClassifierReport
    provenance: dict[str, Any] = field(default_factory=dict)


def _threads(n_threads: int | None) -> Any:
    """Limit scikit-learn's OpenMP threads (on a shared, loaded machine two threads can be 10× slower than one)."""
    import sklearn.ensemble  # noqa: F401  (loads the OpenMP runtime, so the limit below reaches it)
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=n_threads, user_api="openmp")


def _make_pipeline(seed: int, max_iter: int, learning_rate: float) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline

    return Pipeline([
        ("impute", SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True)),
        ("classify", HistGradientBoostingClassifier(max_iter=max_iter, learning_rate=learning_rate,
                                                    early_stopping=False, random_state=seed)),
    ])


def _cross_validate(X: np.ndarray, y: np.ndarray, cls_list: list[str], support: dict[str, int], *, source: str,
                    folds: int, seed: int, max_iter: int, learning_rate: float) -> ClassifierReport:
    from sklearn.metrics import balanced_accuracy_score, confusion_matrix, precision_recall_fscore_support
    from sklearn.model_selection import StratifiedKFold

    oof = np.empty(y.size, dtype=y.dtype)
    fold_acc = []
    for train_idx, test_idx in StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(X, y):
        absent = sorted(set(cls_list) - set(y[test_idx].tolist()))
        if absent:  # cannot happen with ≥ folds rows per class; kept as a guard
            msg = f"{source}: class(es) {', '.join(absent)} absent from a test split; use fewer folds"
            raise InputError(msg)
        m = _make_pipeline(seed, max_iter, learning_rate).fit(X[train_idx], y[train_idx])
        oof[test_idx] = m.predict(X[test_idx])
        fold_acc.append(float(np.mean(oof[test_idx] == y[test_idx])))
    p, r, f1, _ = precision_recall_fscore_support(y, oof, labels=cls_list, zero_division=0)
    return ClassifierReport(
        classes=cls_list, confusion=confusion_matrix(y, oof, labels=cls_list),
        precision={c: float(v) for c, v in zip(cls_list, p, strict=True)},
        recall={c: float(v) for c, v in zip(cls_list, r, strict=True)},
        f1={c: float(v) for c, v in zip(cls_list, f1, strict=True)},
        support=support, fold_accuracy=fold_acc, accuracy=float(np.mean(oof == y)),
        balanced_accuracy=float(balanced_accuracy_score(y, oof)))


def train_classifier(table: Any, label_column: str, *, features: Sequence[str] | None = None, folds: int = 5,
                     seed: int = 0, max_iter: int = 60, learning_rate: float = 0.2, store: Any = None,
                     cross_validate: bool = True, n_threads: int | None = 1) -> TrainedClassifier:
    """Train a classifier on a labelled table, with a stratified k-fold cross-validated report.

    Parameters
    ----------
    table : str, Path, astropy.table.Table or pyarrow.Table
        Labelled rows (see :func:`read_catalogue_table`); rows with a blank label are left out.
    label_column : str
        The column holding the class of each row.
    features : sequence of str, optional
        Feature columns; default those of :data:`DEFAULT_FEATURES` and ``*_mag`` columns present.
    folds : int, optional
        Cross-validation folds (stratified, shuffled with ``seed``); ≥ 2.
    seed : int, optional
        Seed of the fold split and of the classifier.
    max_iter, learning_rate : optional
        Boosting iterations and learning rate of ``HistGradientBoostingClassifier``.
    store : xmine.store.Store, optional
        To read ``table`` by name.
    cross_validate : bool, optional
        False skips the cross-validation (the report is then empty; for timing).
    n_threads : int or None, optional
        OpenMP threads of the boosting (None: scikit-learn's default, all cores).
        One is the default: on a machine shared with other work, OpenMP barriers
        made two threads ten times slower than one in our measurements.

    Returns
    -------
    TrainedClassifier

    Raises
    ------
    xmine.errors.InputError
        One class only; a class with fewer rows than ``folds`` (a test split would
        lack it); missing or text feature columns; no feature found.
    """
    source = str(table) if isinstance(table, (str, os.PathLike)) else "in-memory table"
    t = read_catalogue_table(table, store=store)
    y_all, labelled = _labels(t, label_column)
    t = t[labelled]
    y = y_all[labelled]
    feats = list(features) if features else _auto_features(t, label_column)
    if not feats:
        msg = (f"{source}: no catalogue property columns found ({', '.join(DEFAULT_FEATURES[:6])}, …); "
               "name them with features=/--features")
        raise InputError(msg)
    X = feature_matrix(t, feats)
    empty = [f for f, ok in zip(feats, np.isfinite(X).any(axis=0), strict=True) if not ok]
    if empty:
        keep = [i for i, f in enumerate(feats) if f not in empty]
        feats = [feats[i] for i in keep]
        X = X[:, keep]
        if not feats:
            msg = f"{source}: every feature column is NULL in the labelled rows ({', '.join(empty)})"
            raise InputError(msg)
    classes, counts = np.unique(y, return_counts=True)
    if classes.size < 2:
        only = classes[0] if classes.size else "none"
        msg = (f"{source}: label column {label_column!r} has a single class ({only}, {int(counts.sum())} rows); "
               "a classifier needs at least two")
        raise InputError(msg)
    if folds < 2:
        msg = f"folds={folds}: cross-validation needs at least 2 folds"
        raise InputError(msg)
    small = [(str(c), int(n)) for c, n in zip(classes, counts, strict=True) if n < folds]
    if cross_validate and small:
        desc = ", ".join(f"{c!r} ({n} rows)" for c, n in small)
        msg = (f"{source}: class {desc} has fewer rows than the {folds} cross-validation folds, so a test split "
               "would lack it; add labelled rows, merge or drop the class, or use fewer folds")
        raise InputError(msg)
    cls_list = [str(c) for c in classes]
    report = ClassifierReport(cls_list, np.zeros((len(cls_list),) * 2, dtype=int), {}, {}, {},
                              {c: int(n) for c, n in zip(cls_list, counts, strict=True)}, [], math.nan, math.nan)
    with _threads(n_threads):
        if cross_validate:
            report = _cross_validate(X, y, cls_list, report.support, source=source, folds=folds, seed=seed,
                                     max_iter=max_iter, learning_rate=learning_rate)
        model = _make_pipeline(seed, max_iter, learning_rate).fit(X, y)
    est = model.named_steps["classify"]
    params = {k: v for k, v in est.get_params().items() if isinstance(v, (int, float, str, bool, type(None)))}
    provenance = {
        "estimator": "SimpleImputer(median, add_indicator) + HistGradientBoostingClassifier",
        "features": feats, "dropped_all_null_features": empty,
        "transforms": {f: "log10" for f in feats if f.lower().startswith("flux") or f.lower().endswith("_flux")},
        "label_column": label_column, "classes": cls_list, "params": params, "versions": _versions(),
        "training_source": source, "training_rows": int(y.size), "training_table_sha256": _table_sha256(X, y, feats),
        "cv": {"folds": folds if cross_validate else 0, "seed": seed, "fold_accuracy": report.fold_accuracy,
               "accuracy": report.accuracy, "balanced_accuracy": report.balanced_accuracy,
               "recall": report.recall, "precision": report.precision},
    }
    return TrainedClassifier(model, feats, cls_list, label_column, report, provenance)


# ---------------------------------------------------------------------------- prediction
_ID_COLUMNS = ("name", "ra", "dec", "srcid", "iauname", "sc_ra", "sc_dec", "detid")


def predict_classes(trained: TrainedClassifier, table: Any, *, store: Any = None, n_threads: int | None = 1) -> Table:
    """Predict classes and class probabilities for the rows of a table.

    Parameters
    ----------
    trained : TrainedClassifier
    table : str, Path, astropy.table.Table or pyarrow.Table
        Rows with the model's feature columns (extra columns are ignored).
    store : xmine.store.Store, optional
        To read ``table`` by name.
    n_threads : int or None, optional
        OpenMP threads (see :func:`train_classifier`).

    Returns
    -------
    astropy.table.Table
        Identifier columns found (``name, ra, dec``, 4XMM ``srcid``…), the label column
        when present, ``predicted_class``, ``predicted_prob`` and one ``prob_<class>`` per class.
    """
    t = read_catalogue_table(table, store=store)
    X = feature_matrix(t, trained.features)
    with _threads(n_threads):
        proba = trained.model.predict_proba(X)
    model_classes = [str(c) for c in trained.model.classes_]
    out = Table()
    lower = {c.lower(): c for c in t.colnames}
    for c in _ID_COLUMNS:
        if c in lower:
            out[lower[c]] = t[lower[c]]
    if trained.label_column in t.colnames:
        out[trained.label_column] = t[trained.label_column]
    best = np.argmax(proba, axis=1)
    out["predicted_class"] = np.array(model_classes, dtype=str)[best] if len(t) else np.array([], dtype=str)
    out["predicted_prob"] = proba[np.arange(len(t)), best] if len(t) else np.array([], dtype=float)
    for k, c in enumerate(model_classes):
        out[_column_name(c)] = proba[:, k]
    return out


def write_predictions(store: Any, name: str, predictions: Table, trained: TrainedClassifier) -> dict[str, Any]:
    """Write predictions to the store as table ``name`` with the model's provenance, in one transaction.

    The provenance row (table ``provenance``) has ``service = "xmine.classify"``,
    ``catalogue = "classification"`` and the model provenance as its parameters
    (JSON): features, parameters, versions, training-table SHA-256, CV scores.

    Returns
    -------
    dict
        The provenance row written.
    """
    from xmine.cache import store_result
    from xmine.vo import to_arrow

    prov = trained.provenance
    text = (f"classify {prov.get('label_column')} into {', '.join(trained.classes)} with "
            f"{prov.get('estimator')} on {', '.join(trained.features)}")
    return store_result(store, name, to_arrow(predictions), service="xmine.classify", catalogue="classification",
                        query_text=text, params=prov, expiry_days=None)


# ---------------------------------------------------------------------------- saving
def save_model(trained: TrainedClassifier, path: str | os.PathLike[str]) -> Path:
    """Save a trained classifier with joblib, plus ``<path>.json`` (provenance and the file's SHA-256).

    Returns
    -------
    Path
        The model file.
    """
    import joblib

    from xmine.store import atomic_write

    out = Path(path)
    with atomic_write(out) as tmp:
        joblib.dump({"model": trained.model, "features": trained.features, "classes": trained.classes,
                     "label_column": trained.label_column, "report": trained.report.to_dict(),
                     "provenance": trained.provenance}, tmp)
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    with atomic_write(Path(f"{out}.json")) as tmp:
        tmp.write_text(json.dumps({"model_file": out.name, "sha256": digest, **trained.provenance}, indent=1,
                                  default=str))
    return out


def load_model(path: str | os.PathLike[str]) -> TrainedClassifier:
    """Load a classifier saved by :func:`save_model`, after checking its SHA-256 against the sidecar.

    Raises
    ------
    xmine.errors.InputError
        If the file or its ``.json`` sidecar is missing, or the hash differs.
    """
    import joblib

    p = Path(path)
    side = Path(f"{p}.json")
    if not p.exists() or not side.exists():
        msg = f"{p}: no such model (or its {side.name}); train one with xmine sources classify --save-model"
        raise InputError(msg)
    meta = json.loads(side.read_text())
    if hashlib.sha256(p.read_bytes()).hexdigest() != meta.get("sha256"):
        msg = f"{p}: SHA-256 differs from {side.name}; the model file changed since it was saved, retrain it"
        raise InputError(msg)
    d = joblib.load(p)
    rep = d["report"]
    report = ClassifierReport(rep["classes"], np.asarray(rep["confusion"]), rep["precision"], rep["recall"],
                              rep["f1"], rep["support"], rep["fold_accuracy"], rep["accuracy"],
                              rep["balanced_accuracy"])
    return TrainedClassifier(d["model"], d["features"], d["classes"], d["label_column"], report, d["provenance"])


# ---------------------------------------------------------------------------- one call
@dataclass
class ClassificationRun:
    """What :func:`run_classification` did."""

    trained: TrainedClassifier
    predictions: Table | None = None
    table_name: str | None = None
    model_path: Path | None = None


def run_classification(train: Any, label_column: str, *, predict: Any = None, store: Any = None,
                       out_table: str | None = None, model_path: str | os.PathLike[str] | None = None,
                       model: str | os.PathLike[str] | None = None, features: Sequence[str] | None = None,
                       folds: int = 5, seed: int = 0, max_iter: int = 60) -> ClassificationRun:
    """Train (or load) a classifier, predict a table, write the predictions and save the model.

    Parameters
    ----------
    train : table source or None
        Labelled table (see :func:`read_catalogue_table`); None with ``model``.
    label_column : str
        Its label column.
    predict : table source, optional
        Rows to classify (default the training table: every row, labelled or not).
    store : xmine.store.Store, optional
        Store to read named tables from and to write ``out_table`` to.
    out_table : str, optional
        Table name for the predictions (needs ``store``).
    model_path : path-like, optional
        Save the model here (joblib + ``.json``).
    model : path-like, optional
        Use this saved model instead of training.
    features, folds, seed, max_iter
        See :func:`train_classifier`.

    Returns
    -------
    ClassificationRun
    """
    if model is not None:
        trained = load_model(model)
    elif train is None:
        msg = "give a labelled training table or a saved model (--model)"
        raise InputError(msg)
    else:
        trained = train_classifier(train, label_column, features=features, folds=folds, seed=seed,
                                   max_iter=max_iter, store=store)
    run = ClassificationRun(trained)
    target = predict if predict is not None else train
    if target is not None:
        run.predictions = predict_classes(trained, target, store=store)
    if out_table:
        if store is None or run.predictions is None:
            msg = f"--out-table {out_table}: needs a store and a table to predict"
            raise InputError(msg)
        write_predictions(store, out_table, run.predictions, trained)
        run.table_name = out_table
    if model_path is not None and model is None:
        run.model_path = save_model(trained, model_path)
    return run
