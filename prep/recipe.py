"""Recipes: which domains to build from which sources, as TOML files or built-in names.

A recipe file looks like::

    seed = 42
    block_size = 512
    split_salt = "moe-shards-split-v1"
    tokenizer_backend = "auto"          # optional: never changes the output

    [domains.code]
    source = "json"
    data_files = ["code/*.jsonl.zst"]   # relative paths resolve against the recipe file
    text_field = "content"
    size_mb = 10

A domain table also takes the recipe keys of the pipeline's steps and commit hooks
(`prep.steps`: each declares its own, with a type and a default); they are kept in
``DomainConfig.options`` and shown flat, like the other keys, in the manifest. A few of those
keys are top-level (``Option(top=True)``: benchmark decontamination's ``decontaminate = [...]``):
written above the domain tables, one value for every domain (each domain's `options` holds it;
the manifest shows it once, at the top).

Built-in recipes live in ``prep/recipes/<name>.toml``.
"""

from __future__ import annotations

import tomllib
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from prep import steps as registry
from prep.config import (
    DEFAULT_EVAL_FRACTION,
    DEFAULT_INTERLEAVE,
    DEFAULT_SHUFFLE_DOCS,
    DEFAULT_SHUFFLE_MB,
    DEFAULT_SIZE_MB,
    LIMITS,
    PrepConfig,
    number_problem,
)
from prep.source_names import GROUP_NAMES as GROUPS
from prep.source_names import SOURCE_NAMES as SOURCES
from shards.format import check_domain_name
from shards.tokenizer import BACKEND_CHOICES

RECIPES_DIR = Path(__file__).with_name("recipes")
DEFAULT_RECIPE = "sample"
DEFAULT_SPLIT_SALT = "moe-shards-split-v1"

# Per-domain character filters when a recipe gives none, by domain name (else "default").
DEFAULT_CHAR_LIMITS: dict[str, tuple[int, int]] = {
    "code": (100, 10000),
    "math": (1, 10000),
    "prose": (200, 10000),
    "default": (1, 10000),
}


class RecipeError(ValueError):
    pass


# The range of each number key of a domain table (prep.config.number_problem's keywords); a
# float key without an entry is still checked to be finite.
DOMAIN_LIMITS: dict[str, dict[str, Any]] = {
    **{k: LIMITS[k] for k in ("size_mb", "size_tokens", "eval_fraction", "shuffle_buffer_mb")},
    "shuffle_buffer": {"low": 1},
    "interleave": {"low": 1},
    "synthetic_docs": {"low": 1},
    "min_chars": {"low": 0},
    "max_chars": {"low": 0},
}


@dataclass
class DomainConfig:
    """One `[domains.<name>]` table, with defaults resolved."""

    name: str
    source: str
    dataset: str | None = None  # hf: Hub id
    config: str | None = None  # hf: dataset config name
    split: str = "train"  # hf: split to stream
    data_dir: str | None = None  # hf: data_dir (e.g. "python" for starcoderdata)
    revision: str | None = None  # hf: git revision to pin
    data_files: list[str] = field(default_factory=list)  # json/parquet/text: paths or globs
    path: str | None = None  # mathqa: ZIP path or URL; stdlib/pydoc: optional root override
    text_field: str = "text"
    group: str | None = None  # "wikitext": regroup line rows into articles
    size_mb: float | None = None  # budget in MB (1e6 bytes) of UTF-8 formatted text
    size_tokens: int | None = None  # budget in tokens (EOT included), instead of or with size_mb
    min_chars: int | None = None
    max_chars: int | None = None
    eval_fraction: float | None = None
    shuffle_buffer: int | None = None  # documents in each task's shuffle buffer
    shuffle_buffer_mb: float | None = None  # ... and at most this many MB of text
    interleave: int | None = None  # partitions a domain's stream draws from at a time
    synthetic_docs: int = 3000  # synthetic-math: how many problems the generator makes
    synthetic_seed: int = 42  # synthetic-math: generator seed (NOT the shuffle seed: the corpus,
    #                           and so its eval set, must not change with --seed)
    options: dict[str, Any] = field(default_factory=dict)  # the steps' and hooks' keys
    # What the steps and hooks prepared at plan time (`prep.steps.prepare`), by component name:
    # not a recipe key; set by the plan, read by workers and hooks.
    prepared: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.options = registry.resolve_options(self.options)  # defaults filled in

    def to_dict(self) -> dict[str, Any]:
        """The domain's keys as a recipe writes them: fields and options side by side (the
        top-level options are the recipe's, not shown here)."""
        d = asdict(self)
        top = registry.top_options()
        d.pop("prepared")
        d.update({k: v for k, v in d.pop("options").items() if k not in top})
        return d

    def resolved(self, cli: PrepConfig) -> DomainConfig:
        """This domain with the command line's overrides and every default filled in."""
        out = DomainConfig(**asdict(self))
        for key in ("size_mb", "size_tokens", "eval_fraction", "shuffle_buffer",
                    "shuffle_buffer_mb", "interleave"):
            if getattr(cli, key) is not None:
                setattr(out, key, getattr(cli, key))
        if out.size_mb is None and out.size_tokens is None:
            out.size_mb = DEFAULT_SIZE_MB  # a token budget alone means no byte budget
        lo, hi = DEFAULT_CHAR_LIMITS.get(self.name, DEFAULT_CHAR_LIMITS["default"])
        out.min_chars = lo if out.min_chars is None else out.min_chars
        out.max_chars = hi if out.max_chars is None else out.max_chars
        if out.eval_fraction is None:
            out.eval_fraction = DEFAULT_EVAL_FRACTION
        if out.shuffle_buffer is None:
            out.shuffle_buffer = DEFAULT_SHUFFLE_DOCS
        if out.shuffle_buffer_mb is None:
            out.shuffle_buffer_mb = DEFAULT_SHUFFLE_MB
        if out.interleave is None:
            out.interleave = DEFAULT_INTERLEAVE
        for key in out.options:  # a step's key with a flag of the same name (`steps.Option`)
            if getattr(cli, key, None) is not None:
                out.options[key] = getattr(cli, key)
        out.validate()
        return out

    def validate(self) -> None:
        where = f"[domains.{self.name}]"
        if self.source not in SOURCES:
            raise RecipeError(f"{where}: unknown source {self.source!r}; one of {', '.join(SOURCES)}")
        if self.group is not None and self.group not in GROUPS:
            raise RecipeError(f"{where}: unknown group {self.group!r}; one of {', '.join(GROUPS)}")
        if self.source == "hf" and not self.dataset:
            raise RecipeError(f"{where}: source 'hf' needs `dataset` (a Hub id)")
        if self.source in ("json", "parquet", "text") and not self.data_files:
            raise RecipeError(f"{where}: source {self.source!r} needs `data_files`")
        for f in fields(self):  # every number: its range, and floats finite
            problem = number_problem(f"{where} {f.name}", getattr(self, f.name),
                                     **DOMAIN_LIMITS.get(f.name, {}))
            if problem:
                raise RecipeError(problem)
        if (self.min_chars is not None and self.max_chars is not None
                and self.min_chars > self.max_chars):
            raise RecipeError(f"{where}: min_chars > max_chars")
        try:
            registry.check(self)  # the steps' and hooks' own keys
            registry.pipeline(self)  # ... and their order
        except registry.TopKeyError as e:  # a top-level key's value: not this domain's
            raise RecipeError(str(e)) from e
        except ValueError as e:
            raise RecipeError(f"{where}: {e}") from e


@dataclass
class Recipe:
    name: str
    path: str | None  # the TOML file, None for a recipe built in code
    seed: int = 42
    block_size: int = 512
    split_salt: str = DEFAULT_SPLIT_SALT
    domains: list[DomainConfig] = field(default_factory=list)
    tokenizer_backend: str | None = None  # --tokenizer-backend's default (output unchanged)
    options: dict[str, Any] = field(default_factory=dict)  # top-level step keys, as written

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(d.pop("options"))
        return d


_TOP_KEYS = {"seed", "block_size", "split_salt", "domains", "description",
             "tokenizer_backend"}
_DOMAIN_KEYS = {f.name for f in fields(DomainConfig)} - {"name", "options", "prepared"}


def _option_specs() -> dict[str, registry.Option]:
    opts = registry.options()
    clash = sorted(set(opts) & (_DOMAIN_KEYS | _TOP_KEYS | {"name", "options", "prepared"}))
    if clash:
        raise RecipeError(f"step option(s) {', '.join(clash)} clash with recipe keys; rename them")
    return opts


def builtin_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.toml"))


def load_recipe(name_or_path: str) -> Recipe:
    """A recipe by built-in name or TOML path; relative data paths resolve against the file."""
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.exists():
        path = p
    elif (RECIPES_DIR / f"{name_or_path}.toml").is_file():
        path = RECIPES_DIR / f"{name_or_path}.toml"
    else:
        raise RecipeError(
            f"recipe {name_or_path!r} is neither a TOML file nor a built-in recipe "
            f"({', '.join(builtin_recipes())})"
        )
    if not path.is_file():
        raise RecipeError(f"{path}: recipe file not found")
    path = path.resolve()  # data paths resolve against it: absolute, for workers anywhere
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise RecipeError(f"{path}: not valid TOML: {e}") from e
    return parse_recipe(raw, name=path.stem, path=path)


def parse_recipe(raw: dict[str, Any], *, name: str, path: Path | None) -> Recipe:
    where = str(path) if path else name
    specs = _option_specs()
    top = {k: o for k, o in specs.items() if o.top}
    unknown = set(raw) - _TOP_KEYS - set(top)
    if unknown:
        raise RecipeError(f"{where}: unknown top-level key(s) {', '.join(sorted(unknown))}; "
                          f"allowed: {', '.join(sorted(_TOP_KEYS | set(top)))}")
    tables = raw.get("domains")
    if not isinstance(tables, dict) or not tables:
        raise RecipeError(f"{where}: no [domains.<name>] tables")
    base = path.parent if path else Path.cwd()
    top_values = {k: raw[k] for k in top if k in raw}
    for k, v in top_values.items():
        _check_type(f"{where}: {k}", v, top[k].kind)
    top_values = _resolve_paths(top_values, top, base)
    domain_specs = {k: o for k, o in specs.items() if not o.top}
    domains = []
    for dname, table in tables.items():
        try:
            check_domain_name(dname)
        except ValueError as e:
            raise RecipeError(f"{where}: {e}") from e
        if not isinstance(table, dict):
            raise RecipeError(f"{where}: domains.{dname} must be a table")
        misplaced = sorted(set(table) & set(top))
        if misplaced:
            raise RecipeError(f"{where}: [domains.{dname}] {', '.join(misplaced)}: a top-level "
                              "key (it applies to every domain); write it above the "
                              "[domains.*] tables")
        bad = set(table) - _DOMAIN_KEYS - set(domain_specs)
        if bad:
            raise RecipeError(f"{where}: [domains.{dname}] unknown key(s) {', '.join(sorted(bad))}; "
                              f"allowed: {', '.join(sorted(_DOMAIN_KEYS | set(domain_specs)))}")
        if "source" not in table:
            raise RecipeError(f"{where}: [domains.{dname}] needs `source` ({', '.join(SOURCES)})")
        t = dict(table)
        if isinstance(t.get("data_files"), str):
            t["data_files"] = [t["data_files"]]
        for key, value in t.items():
            kind = specs[key].kind if key in specs else _DOMAIN_TYPES[key]
            _check_type(f"{where}: [domains.{dname}] {key}", value, kind)
        t["options"] = {**top_values, **_resolve_paths(
            {k: t.pop(k) for k in list(t) if k in specs}, specs, base)}
        t["data_files"] = [_resolve(base, f) for f in t.get("data_files", [])]
        if t.get("path") and "://" not in t["path"]:
            t["path"] = _resolve(base, t["path"])
        dc = DomainConfig(name=dname, **t)
        try:
            dc.validate()
        except RecipeError as e:
            raise RecipeError(f"{where}: {e}") from None
        domains.append(dc)
    for key, kind in (("seed", int), ("block_size", int), ("split_salt", str),
                      ("description", str), ("tokenizer_backend", str)):
        if key in raw:
            _check_type(f"{where}: {key}", raw[key], kind)
    if raw.get("tokenizer_backend", "auto") not in BACKEND_CHOICES:
        raise RecipeError(f"{where}: tokenizer_backend must be one of "
                          f"{', '.join(BACKEND_CHOICES)}, got {raw['tokenizer_backend']!r}")
    if raw.get("block_size", 512) < 1:
        raise RecipeError(f"{where}: block_size must be >= 1, got {raw['block_size']}")
    return Recipe(
        name=name,
        path=str(path) if path else None,
        seed=raw.get("seed", 42),
        block_size=raw.get("block_size", 512),
        split_salt=raw.get("split_salt", DEFAULT_SPLIT_SALT),
        domains=domains,
        tokenizer_backend=raw.get("tokenizer_backend"),
        options=top_values,
    )


def _resolve_paths(values: dict[str, Any], specs: dict[str, registry.Option],
                   base: Path) -> dict[str, Any]:
    """Option values with the relative paths of `path` options resolved against `base`."""
    out = dict(values)
    for k, v in values.items():
        if specs[k].path and v is not None:
            out[k] = [_resolve(base, x) for x in v] if isinstance(v, list) else _resolve(base, v)
    return out


_DOMAIN_TYPES = typing.get_type_hints(DomainConfig)


def _check_type(where: str, value: Any, kind: Any) -> None:
    """A recipe value of the type its key takes, or a one-line RecipeError saying which (a key
    of kind `Any` is checked by the component that declares it)."""
    if kind is Any:
        return
    allowed = typing.get_args(kind) if isinstance(kind, types.UnionType) else (kind,)
    allowed = tuple(typing.get_origin(a) or a for a in allowed if a is not type(None))
    ok = isinstance(value, allowed) and not (isinstance(value, bool) and bool not in allowed)
    if float in allowed and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if ok and list in allowed:
        ok = all(isinstance(v, str) for v in value)
    if not ok:
        names = {int: "an integer", float: "a number", str: "a string",
                 list: "a list of strings", bool: "true or false"}
        want = " or ".join(names.get(a, a.__name__) for a in allowed)
        raise RecipeError(f"{where} must be {want}, got {value!r}")


def _resolve(base: Path, p: str) -> str:
    q = Path(p).expanduser()
    return str(q if q.is_absolute() else (base / q))
