"""The project file, ``xmine.toml``: services, paths, cache, pipeline parameters, executor.

Every key has a default and a one-line description (``xmine config init``
writes them all, commented). Loading validates types and rejects unknown keys
with their path, so a typo such as ``[pipline]`` fails at once instead of
being ignored. Any key can be overridden by an environment variable named
``XMINE_<SECTION>__<KEY>`` (sections nest with ``__``), e.g.
``XMINE_SERVICES__CSC21__TAP_URL=http://localhost:8080/tap``.

Precedence, lowest first: defaults, the file, environment variables, then
explicit keyword overrides from the API or command line.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from xmine.errors import InputError
from xmine.store import atomic_write

__all__ = [
    "BinningConfig",
    "CacheConfig",
    "ChandraArchiveConfig",
    "Csc21Config",
    "EventsConfig",
    "ExecutorConfig",
    "ProcessConfig",
    "ProjectConfig",
    "ServicesConfig",
    "XmineConfig",
    "XmmConfig",
    "default_config_text",
    "load_config",
    "write_default_config",
]

ENV_PREFIX = "XMINE_"
DEFAULT_CONFIG_NAME = "xmine.toml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, validate_default=True)


class ProjectConfig(_Section):
    """Where xmine keeps its files."""

    store: Path = Field(Path("xmine.duckdb"), description="DuckDB file holding the catalogue cache and results")
    data_dir: Path = Field(Path("archive"), description="folder of Chandra obsid folders (archive layout)")
    work_dir: Path = Field(Path("products"), description="folder for every product xmine writes")
    catalog_dirs: list[Path] = Field(
        default_factory=list, description="extra folders of catalogue descriptions (*.toml), searched first"
    )
    query_dirs: list[Path] = Field(
        default_factory=list, description="extra folders of named queries (*.adql, *.sql), searched first"
    )


class Csc21Config(_Section):
    """The Chandra Source Catalog 2.1 services and table names."""

    tap_url: str = Field("https://cda.cfa.harvard.edu/csc21tap", description="CSC 2.1 TAP service")
    scs_url: str = Field(
        "https://cda.cfa.harvard.edu/csc21scs/coneSearch", description="CSC 2.1 simple cone search"
    )
    products_url: str = Field(
        "https://cda.cfa.harvard.edu/csccli", description="CSC per-source products (csccli browse, retrieveFile)"
    )
    master_source: str = Field("csc21.master_source", description="table of master sources")
    master_stack_assoc: str = Field("csc21.master_stack_assoc", description="master source -> stack detections")
    stack_observation_assoc: str = Field(
        "csc21.stack_observation_assoc", description="stack detections -> observations (obsid)"
    )
    stack_source: str = Field("csc21.stack_source", description="per-stack source properties")
    observation_source: str = Field("csc21.observation_source", description="per-observation source properties")
    adql_geometry: bool = Field(
        False, description="the service accepts ADQL CONTAINS/CIRCLE (the real CSC 2.1 service does not)"
    )


class XmmConfig(_Section):
    """The 4XMM catalogue service and table name."""

    tap_url: str = Field("https://nxsa.esac.esa.int/tap-server/tap", description="XMM-Newton archive TAP")
    table: str = Field("xsa.v_epic_source_cat", description="4XMM detections table")
    adql_geometry: bool = Field(True, description="the service accepts ADQL CONTAINS/CIRCLE")


class ChandraArchiveConfig(_Section):
    """Where obsid folders are downloaded from."""

    base_url: str = Field(
        "https://cxc.cfa.harvard.edu/cdaftp/byobsid", description="archive root laid out as <last digit>/<obsid>/"
    )


class ServicesConfig(_Section):
    """Remote services; override these to point xmine at a mirror or a local server."""

    timeout_s: float = Field(300.0, gt=0, description="network timeout per request, seconds")
    retries: int = Field(3, ge=0, description="retries on connection errors, 429 and 502-504")
    maxrec: int = Field(100_000, gt=0, description="row limit asked of TAP services per query")
    csc21: Csc21Config = Field(default_factory=Csc21Config, description="Chandra Source Catalog 2.1")
    xmm: XmmConfig = Field(default_factory=XmmConfig, description="4XMM")
    chandra_archive: ChandraArchiveConfig = Field(
        default_factory=ChandraArchiveConfig, description="Chandra data archive"
    )


class CacheConfig(_Section):
    """The DuckDB catalogue cache."""

    expiry_days: float = Field(90.0, gt=0, description="cached query results older than this are refetched")
    offline: bool = Field(False, description="never touch the network; answer from the cache or fail")


class EventsConfig(_Section):
    """Event filtering."""

    emin_kev: float = Field(0.5, ge=0, description="lower energy bound, keV")
    emax_kev: float = Field(7.0, gt=0, description="upper energy bound, keV")
    grades: list[int] = Field([0, 2, 3, 4, 6], description="ASCA grades kept")
    status_zero: bool = Field(True, description="keep only events with status == 0")

    @model_validator(mode="after")
    def _band_order(self) -> EventsConfig:
        if self.emin_kev >= self.emax_kev:
            msg = f"emin_kev = {self.emin_kev} must be below emax_kev = {self.emax_kev}"
            raise ValueError(msg)
        return self


class BinningConfig(_Section):
    """Contour binning; names, meanings and defaults are contbin's (``contbin --help``)."""

    sn: float = Field(15.0, gt=0, description="target signal-to-noise ratio per bin (contbin --sn)")
    smoothsn: float = Field(15.0, gt=0, description="S/N of the accumulative smoothing (contbin --smoothsn)")
    constrainfill: bool = Field(False, description="constrain bin shapes (contbin --constrainfill)")
    constrainval: float = Field(3.0, gt=0, description="geometric constraint value (contbin --constrainval)")
    noscrub: bool = Field(False, description="keep bins below the target S/N (contbin --noscrub)")
    guarantee_sn: bool = Field(
        False, description="rescrub until every bin reaches sn (contbin may leave a few just below with a background)"
    )


class ProcessConfig(_Section):
    """The per-cluster pipeline (``xmine process``)."""

    binsize: float = Field(1.0, gt=0, description="sky pixels (0.492 arcsec) per image pixel")
    merge_size_arcmin: float = Field(12.0, gt=0, description="side of the merged image around the cluster, arcmin")
    crop_radius_arcmin: float = Field(3.0, gt=0, description="half side of the square crop that is binned, arcmin")
    lc_exclude_arcsec: float = Field(
        180.0, ge=0, description="radius around the cluster left out of the flare light curve, arcsec"
    )
    lc_bin_frames: int = Field(80, ge=1, description="light-curve bin in frames (80 x 3.24104 s = 259.28 s)")
    deflare_sigma: float = Field(
        3.0, gt=0, description="good light-curve bins lie within the quiescent rate +- this many Poisson sigma"
    )
    deflare_scale: float = Field(
        0.0, ge=0, description="if > 1, use lc_clean's rate/scale..rate*scale limits instead (CIAO: 1.2)"
    )
    detect: bool = Field(True, description="add xmine's own point-source detections to the catalogue's")
    false_detections_per_field: float = Field(1.0, gt=0, description="expected false detections per image")
    core_radius_arcsec: float = Field(
        20.0, ge=0, description="point sources closer to the centre are flagged for review, not masked"
    )
    profile_bins: int = Field(20, ge=1, description="annuli of the radial surface-brightness profile")
    background: Literal["local", "blank_sky", "none"] = Field(
        "local", description="background for binning: local (annulus, sources masked) | blank_sky | none"
    )
    blank_sky_dir: Path | None = Field(
        None, description="blank_sky: folder of background event files, one per obsid, named *<obsid>*bg*.fits[.gz]"
    )
    bg_inner_arcmin: float = Field(
        4.0, gt=0, description="inner radius of the local-background annulus (out to the merged image's edge)"
    )
    binning_input: Literal["counts", "flux"] = Field(
        "counts", description="bin the counts image (Poisson S/N) or a flux image rescaled to counts (hand pipeline)"
    )
    flux_k: float = Field(
        2.5, gt=0, description="flux route only: image = k * rate * <counts>/<rate>; its S/N is then nominal"
    )


class MeasureConfig(_Section):
    """Per-region measurements of every contour bin (``xmine.measure``)."""

    cosmology: str = Field(
        "FlatLambdaCDM(H0=70, Om0=0.3)",
        description="astropy realization name (e.g. Planck18) or FlatLambdaCDM(H0=.., Om0=..), for kpc and r500",
    )
    arf: Path | None = Field(None, description="ARF for surface brightness as energy flux (empty: count rates only)")


class SpectraConfig(_Section):
    """Per-region OGIP spectra from the events' PI column (``xmine.spectra``)."""

    enabled: bool = Field(True, description="write a source and background spectrum per bin, per obsid and combined")
    responses_dir: Path | None = Field(
        None, description="folder of responses, one *<obsid>*.arf and *<obsid>*.rmf per obsid; 'simulator' for "
        "xmine's simulated observations; unset: spectra without responses"
    )


class FitConfig(_Section):
    """Spectral fits of the region spectra through sherpa (the ``fit`` extra)."""

    enabled: bool = Field(False, description="fit every region's combined spectrum (needs responses)")
    model: Literal["auto", "apec", "brems", "bremss"] = Field(
        "auto", description="auto (xsapec when sherpa has XSPEC, else a bremsstrahlung continuum) | apec | bremss"
    )
    nh_1e22: float | None = Field(None, ge=0, description="Galactic N_H in 1e22 cm^-2 (empty: HI4PI at the cluster)")
    stat: Literal["auto", "cstat", "wstat", "chi2"] = Field(
        "auto", description="fit statistic; auto: wstat with a background spectrum, else cstat"
    )
    errors: bool = Field(True, description="1-sigma confidence intervals (a few seconds per region)")
    emin_kev: float = Field(0.5, gt=0, description="lower end of the fitted band, keV")
    emax_kev: float = Field(7.0, gt=0, description="upper end of the fitted band, keV")


class ExecutorConfig(_Section):
    """How bulk runs are spread over processes or a Dask cluster."""

    kind: Literal["serial", "processes", "dask"] = Field("processes", description="serial | processes | dask")
    workers: int = Field(2, ge=1, description="worker processes (processes, and a local Dask cluster)")
    dask_address: str = Field("", description="scheduler address for kind = dask; empty starts a local cluster")


class XmineConfig(_Section):
    """The whole project file."""

    project: ProjectConfig = Field(default_factory=ProjectConfig, description="files and folders")
    services: ServicesConfig = Field(default_factory=ServicesConfig, description="remote services")
    cache: CacheConfig = Field(default_factory=CacheConfig, description="catalogue cache")
    events: EventsConfig = Field(default_factory=EventsConfig, description="event filtering")
    binning: BinningConfig = Field(default_factory=BinningConfig, description="contour binning")
    process: ProcessConfig = Field(default_factory=ProcessConfig, description="per-cluster pipeline")
    measure: MeasureConfig = Field(default_factory=MeasureConfig, description="per-region measurements")
    spectra: SpectraConfig = Field(default_factory=SpectraConfig, description="per-region spectra")
    fit: FitConfig = Field(default_factory=FitConfig, description="spectral fits (sherpa)")
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig, description="bulk execution")

    def resolve(self, base: Path) -> XmineConfig:
        """Return a copy with relative project paths made absolute against ``base``."""
        proj = self.project
        updates = {
            name: (base / getattr(proj, name)) if not getattr(proj, name).is_absolute() else getattr(proj, name)
            for name in ("store", "data_dir", "work_dir")
        }
        updates["catalog_dirs"] = [p if p.is_absolute() else base / p for p in proj.catalog_dirs]
        updates["query_dirs"] = [p if p.is_absolute() else base / p for p in proj.query_dirs]
        return self.model_copy(update={"project": proj.model_copy(update=updates)})


def _known_keys(loc: tuple[Any, ...]) -> list[str]:
    model: Any = XmineConfig
    for part in loc:
        field = model.model_fields.get(part)
        if field is None or not isinstance(field.annotation, type) or not issubclass(field.annotation, BaseModel):
            return []
        model = field.annotation
    return sorted(model.model_fields)


def _describe(exc: ValidationError, source: str) -> str:
    err = exc.errors()[0]
    loc = tuple(err["loc"])
    key = ".".join(str(p) for p in loc)
    if err["type"] == "extra_forbidden":
        known = _known_keys(loc[:-1])
        where = f"[{'.'.join(map(str, loc[:-1]))}]" if len(loc) > 1 else "the top level"
        return f"{source}: unknown key '{key}'; {where} takes: {', '.join(known)}"
    more = f" (and {len(exc.errors()) - 1} more problems)" if len(exc.errors()) > 1 else ""
    return f"{source}: {key} = {err.get('input')!r}: {err['msg']}{more}"


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name[len(ENV_PREFIX):]:
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX):].split("__")]
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                msg = f"environment variable {name}: {part} is a value, not a section"
                raise InputError(msg)
        value: Any = raw
        if raw[:1] in "[{":
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                value = raw
        node[path[-1]] = value
    return tree


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def load_config(path: str | os.PathLike[str] | None = None, *, environ: Mapping[str, str] | None = None,
                overrides: Mapping[str, Any] | None = None) -> XmineConfig:
    """Load and validate the project configuration.

    Parameters
    ----------
    path : path-like, optional
        The TOML file. Without it, ``./xmine.toml`` is read if it exists, else
        the defaults are used. Relative paths inside are taken relative to the
        file's folder (or the current folder when there is no file).
    environ : mapping, optional
        Environment to read ``XMINE_*`` overrides from (default ``os.environ``).
    overrides : mapping, optional
        Nested values that win over everything else, e.g. ``{"binning": {"sn": 50}}``.

    Returns
    -------
    XmineConfig

    Raises
    ------
    xmine.errors.InputError
        If the file is missing (when named), is not TOML, has unknown keys or bad values.
    """
    data: dict[str, Any] = {}
    source = "defaults"
    if path is None and Path(DEFAULT_CONFIG_NAME).exists():
        path = DEFAULT_CONFIG_NAME
    base = Path.cwd()
    if path is not None:
        p = Path(path)
        source = str(p)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            msg = f"{p}: no such configuration file; create one with `xmine config init {p}`"
            raise InputError(msg) from exc
        except tomllib.TOMLDecodeError as exc:
            msg = f"{p}: not valid TOML ({exc})"
            raise InputError(msg) from exc
        base = p.resolve().parent
    env = _env_overrides(os.environ if environ is None else environ)
    if env:
        source += " + XMINE_* environment"
    data = _merge(_merge(data, env), overrides or {})
    try:
        config = XmineConfig.model_validate(data)
    except ValidationError as exc:
        raise InputError(_describe(exc, source)) from exc
    return config.resolve(base)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, Path):
        return json.dumps(value.as_posix())
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


def _section_text(model: BaseModel, prefix: str, *, commented: bool) -> list[str]:
    lines: list[str] = []
    sub: list[tuple[str, BaseModel, str]] = []
    lead = "# " if commented else ""
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            sub.append((name, value, field.description or ""))
            continue
        if field.description:
            lines.append(f"# {field.description}")
        if value is None:  # TOML has no null: an unset key stays commented out
            lines.append(f"# {name} = (unset)")
        else:
            lines.append(f"{lead}{name} = {_toml_value(value)}")
    out: list[str] = []
    if lines:
        out.append(f"[{prefix}]")
        out.extend(lines)
        out.append("")
    for name, value, description in sub:
        key = f"{prefix}.{name}" if prefix else name
        block = _section_text(value, key, commented=commented)
        if block and description:
            block.insert(0, f"# --- {description} ---")
        out.extend(block)
    return out


def default_config_text(config: XmineConfig | None = None, *, commented: bool = True) -> str:
    """Return the configuration as TOML, every key with its one-line description.

    Parameters
    ----------
    config : XmineConfig, optional
        The values to write (default: the defaults).
    commented : bool, optional
        Comment out every value, so the file documents the defaults without fixing them.
    """
    config = config or XmineConfig()
    header = [
        "# xmine project file. Every key is shown with its default; uncomment to change it.",
        "# Environment variables XMINE_<SECTION>__<KEY> override the file,",
        "# e.g. XMINE_SERVICES__CSC21__TAP_URL=http://localhost:8080/tap",
        "",
    ]
    return "\n".join(header + _section_text(config, "", commented=commented)).rstrip() + "\n"


def write_default_config(path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write the commented default configuration to ``path`` and return it."""
    p = Path(path)
    if p.exists() and not overwrite:
        msg = f"{p}: file exists; pass --force to replace it"
        raise InputError(msg)
    with atomic_write(p) as tmp:
        tmp.write_text(default_config_text(), encoding="utf-8")
    return p
