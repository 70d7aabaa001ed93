"""``source = "hf"``: a Hugging Face Hub dataset, streamed shard by shard.

Partitions are the streamed dataset's shards (``IterableDataset.num_shards``: its data files,
in order); a task reads ``ds.shard(num_shards=n, index=i)``, which is shard i alone (datasets
gives contiguous groups of shards, one each when n is the shard count). A dataset with fewer
than ``CUT_BELOW_SHARDS`` shards (WikiText-103's train split has two; many have one) would
leave workers idle: each of its shards is a stream partition (`prep.readers.pieces`) whose rows
are cut into pieces of ``partition_bytes`` of text, streamed once by the coordinator's cutter.
The rule depends on the dataset only (never on --workers), so the plan does too.

Online, the coordinator resolves the revision to a commit (``HfApi``) and every task streams
that commit. Offline (``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE``, or the Hub unreachable),
the dataset is read from the local Hub cache when a snapshot is there (filled beforehand with
``hf download ID --repo-type dataset``): ``datasets.load_dataset(ID, streaming=True)`` does not
read that cache offline, so the snapshot directory itself is streamed, and its commit hash is
the resolved revision. Workers never probe the network: what they need is in the partition.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

from prep.readers import pieces
from prep.readers.base import BadRecord, Document, Partition, Reader, SourceError
from prep.readers.rows import FIRST_RECORD, PROVENANCE_FIELDS, bad_field, jsonable

HUB_HOST = "huggingface.co"
HUB_PORT = 443
HUB_TIMEOUT_S = 3.0
URL_TIMEOUT_S = 10.0
BATCH_ROWS = 1000  # rows per Arrow batch read from datasets
CUT_BELOW_SHARDS = 32  # fewer shards than this: each is cut into pieces (a worker each)
_OFFLINE_VALUES = {"1", "on", "yes", "true"}


def hub_unreachable_reason(timeout: float = HUB_TIMEOUT_S) -> str | None:
    """Why the Hugging Face Hub cannot be used now, or None when a TCP connect succeeds.

    Offline flags count first; the connect runs in a daemon thread so that a slow DNS lookup
    cannot hold the caller for longer than `timeout` (+0.5 s).
    """
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in _OFFLINE_VALUES:
            return f"{var} is set"
    result: dict[str, Any] = {}

    def probe() -> None:
        try:
            socket.create_connection((HUB_HOST, HUB_PORT), timeout=timeout).close()
            result["ok"] = True
        except OSError as e:
            result["error"] = e

    thread = threading.Thread(target=probe, name="hub-probe", daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    if result.get("ok"):
        return None
    if "error" in result:
        return f"cannot connect to {HUB_HOST}:{HUB_PORT} ({result['error']})"
    return f"no answer from {HUB_HOST}:{HUB_PORT} within {timeout:g} s"


def hub_cache_dir() -> str:
    """huggingface_hub's cache folder, from the environment as it is now (HF_HUB_CACHE,
    HF_HOME/hub, or ~/.cache/huggingface/hub), as huggingface_hub resolves it at import."""
    env = os.environ
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env.get(var):
            return os.path.expandvars(os.path.expanduser(env[var]))
    home = env.get("HF_HOME") or os.path.join(
        env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "huggingface")
    return os.path.join(os.path.expandvars(os.path.expanduser(home)), "hub")


def cached_snapshot(dataset: str, revision: str | None, cache_dir: str) -> str | None:
    """The local snapshot folder of a dataset repository at `revision`, or None if absent."""
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(dataset, repo_type="dataset", revision=revision,
                                 cache_dir=cache_dir, local_files_only=True)
    except Exception:  # not cached (LocalEntryNotFoundError), or not a valid repository id
        return None


def column_values(table: Any, name: str) -> list[Any]:
    """A pyarrow column as Python values; datasets' ``Json`` extension columns (what the json
    builder makes of a field with mixed types) hold JSON text, decoded here."""
    col = table.column(name)
    values = col.to_pylist()
    kind = getattr(col.type, "extension_name", "") or ""
    if "json" in kind.lower():
        values = [None if v is None else json.loads(v) for v in values]
    return values


class HFReader(Reader):
    name = "hf"

    def __init__(self, cfg: Any, settings: Any) -> None:
        super().__init__(cfg, settings)
        self.text_field = cfg.text_field
        self.mode: str | None = None  # "hub" or "cache", set by _resolve (coordinator)
        self.target = cfg.dataset  # what load_dataset streams: the id or the snapshot folder
        self.resolved_revision: str | None = None
        self.offline_reason: str | None = None
        self._partitions: list[Partition] | None = None
        self._datasets: dict[tuple[str, str | None], Any] = {}
        self._pieces: dict[str, dict[str, Any]] = {}  # piece key -> its partition record
        self._stream_last: dict[str, int] = {}  # stream key -> index of its last piece
        if settings.probe:
            self._resolve()

    def _resolve(self) -> None:
        c = self.cfg
        why = hub_unreachable_reason()
        if why is None:
            self.mode, self.resolved_revision = "hub", self._resolve_revision()
            return
        cache = hub_cache_dir()
        snapshot = cached_snapshot(c.dataset, c.revision, cache)
        if snapshot is None:
            at = f" at revision {c.revision!r}" if c.revision else ""
            flag = f" --revision {c.revision}" if c.revision else ""
            raise self._error(
                f"dataset {c.dataset!r} needs the Hugging Face Hub, which is unreachable: "
                f"{why}; and the local Hub cache ({cache}) holds no snapshot of it{at}. Fill "
                f"the cache on a machine with internet (`hf download {c.dataset} --repo-type "
                f"dataset{flag}`, with HF_HOME pointing at a cache this machine reads), use "
                "`--recipe sample` (fully offline), or download the data and point the domain "
                "at local files (source = \"json\" / \"parquet\" / \"text\").")
        self.mode, self.target, self.offline_reason = "cache", snapshot, why
        self.resolved_revision = os.path.basename(os.path.normpath(snapshot))

    def _resolve_revision(self) -> str | None:
        try:
            from huggingface_hub import HfApi

            info = HfApi().dataset_info(self.cfg.dataset, revision=self.cfg.revision,
                                        timeout=URL_TIMEOUT_S)
            return info.sha
        except Exception:  # the revision pin is informative; loading reports real failures
            return None

    # ------------------------------------------------------------------ plan (coordinator)

    def partitions(self) -> list[Partition]:
        if self._partitions is None:
            if self.mode is None:
                raise RuntimeError("HFReader.partitions() runs in the coordinator "
                                   "(ReadSettings(probe=True)); workers use the partition spec")
            spec = {"mode": self.mode, "target": self.target,
                    "revision": self.resolved_revision or self.cfg.revision}
            n = self._dataset(spec).num_shards
            self._partitions = [self._partition(spec, i, n) for i in range(n)]
        return self._partitions

    def _partition(self, base: dict[str, Any], i: int, n: int) -> Partition:
        c = self.cfg
        spec = {"mode": base["mode"], "target": base["target"], "revision": base["revision"],
                "shard": i, "n_shards": n}
        if n < CUT_BELOW_SHARDS:
            spec["cut"] = self.settings.partition_bytes
        identity = (f"hf:{c.dataset}@{base['revision'] or 'unresolved'}:{c.config or ''}:"
                    f"{c.split}:{c.data_dir or ''}#{i}/{n}")
        return Partition(i, f"shard-{i:05d}-of-{n:05d}", spec, identity)

    def partitions_after(self, partition: Partition) -> Iterator[Partition]:
        if partition.piece is not None:  # the stream's later pieces, then the next shards
            key = pieces.stream_of(partition).key
            yield from pieces.later_pieces(partition, lambda: self._stream_last.get(key))
        spec = partition.spec  # derived from the spec: listing shards would need the network
        for j in range(int(spec["shard"]) + 1, int(spec["n_shards"])):
            yield self._partition(spec, j, int(spec["n_shards"]))

    def _dataset(self, spec: dict[str, Any]) -> Any:
        """The streamed split (cached per reader): the Hub id at the resolved revision, or
        the cached snapshot folder."""
        import datasets

        c = self.cfg
        key = (spec["target"], spec["revision"])
        if key not in self._datasets:
            try:
                if spec["mode"] == "cache":
                    ds = datasets.load_dataset(spec["target"], c.config, split=c.split,
                                               streaming=True, data_dir=c.data_dir)
                else:
                    ds = datasets.load_dataset(spec["target"], c.config, split=c.split,
                                               streaming=True, data_dir=c.data_dir,
                                               revision=spec["revision"])
            except Exception as e:
                where = (f"the cached snapshot {spec['target']}" if spec["mode"] == "cache"
                         else "")
                raise self._error(
                    f"dataset {c.dataset!r}{' (' + where + ')' if where else ''}: loading "
                    f"failed ({type(e).__name__}: {e}); check dataset/config/split/data_dir/"
                    "revision, or use local files") from e
            self._datasets[key] = ds
        return self._datasets[key]

    def describe(self) -> dict[str, Any]:
        c = self.cfg
        out: dict[str, Any] = {"reader": "hf", "dataset": c.dataset}
        for key in ("config", "split", "data_dir", "revision"):
            if getattr(c, key) is not None:
                out[key] = getattr(c, key)
        if self.resolved_revision:
            out["resolved_revision"] = self.resolved_revision
        if self.mode == "cache":
            out["revision_source"] = f"local Hub cache (offline: {self.offline_reason})"
            out["snapshot"] = self.target
        out["synthetic"] = False
        out["description"] = (f"Hugging Face Hub dataset {c.dataset}"
                              f"{' (' + c.config + ')' if c.config else ''}, split {c.split}, "
                              f"field {c.text_field!r}, streamed shard by shard in the "
                              "dataset's row order"
                              + (", from the local Hub cache" if self.mode == "cache" else ""))
        return out

    def format_rules(self) -> list[str]:
        return [f"each row's {self.text_field!r} field is one document, unchanged",
                "rows whose field is missing or not a string are counted as bad and skipped "
                "(in a shard's first row it is an error: the field name is probably wrong)"]

    def notes(self) -> list[str]:
        if self.mode != "cache":
            return []
        return [f"dataset {self.cfg.dataset!r}: read from the local Hub cache (offline): "
                f"snapshot {self.resolved_revision} ({self.offline_reason}; {self.target})"]

    # ------------------------------------------------------------------ read (worker)

    def read(self, partition: Partition) -> Iterator[Document | BadRecord]:
        if partition.piece is None:
            yield from self._shard_rows(partition)
            return
        piece = pieces.load(self, partition)
        if piece.last:
            self._stream_last[pieces.stream_of(partition).key] = piece.index
        yield from pieces.row_records(piece.data)
        self._pieces[partition.key] = self._piece_record(partition, piece)

    def cut(self, partition: Partition) -> Iterator[pieces.Piece]:
        """A shard's rows cut into pieces by the bytes of their texts (one streamed read)."""
        rows = (pieces.row_line(r.text, r.source) if isinstance(r, Document)
                else pieces.row_line(None, bad=r.reason) for r in self._shard_rows(partition))
        return pieces.cut_rows(rows, int(partition.spec["cut"]))

    def _shard_rows(self, partition: Partition) -> Iterator[Document | BadRecord]:
        spec = partition.spec
        i, n = int(spec["shard"]), int(spec["n_shards"])
        ds = self._dataset(spec)
        name = f"dataset {self.cfg.dataset!r}"
        if ds.num_shards != n:
            raise self._error(f"{name} has {ds.num_shards} shards now, the plan has {n}: it "
                              "changed since the run was planned; plan the run again")
        if n > 1:
            ds = ds.shard(num_shards=n, index=i)

        def fail(r: int, e: Exception) -> SourceError:
            return self._error(f"{name} shard {i} near row {r}: streaming failed "
                               f"({type(e).__name__}: {e}); retry, or use local files")

        yield from self._rows(ds, lambda r: f"{name} shard {i} row {r}",
                              lambda r: {"shard": i, "row": r}, fail)

    def _rows(self, ds: Any, where: Callable[[int], str], base: Callable[[int], dict[str, Any]],
              fail: Callable[[int, Exception], SourceError]) -> Iterator[Document | BadRecord]:
        """Documents from an IterableDataset, as Arrow batches of BATCH_ROWS (several times
        faster than row dicts); a first row without its text field is fatal."""
        try:
            batches = iter(ds.with_format("arrow").iter(batch_size=BATCH_ROWS))
        except Exception as e:
            raise fail(0, e) from e
        start = 0
        while True:
            try:
                table = next(batches)
                names = table.column_names
                texts = (column_values(table, self.text_field) if self.text_field in names
                         else [None] * table.num_rows)
                prov = {k: column_values(table, k) for k in PROVENANCE_FIELDS if k in names}
            except StopIteration:
                return
            except Exception as e:  # bad bytes can surface only when Arrow converts them
                raise fail(start, e) from e
            for j, text in enumerate(texts):
                r = start + j
                if isinstance(text, str):
                    p = base(r)
                    for key, col in prov.items():
                        if col[j] is not None:
                            p[key] = jsonable(col[j])
                    yield Document(text, p)
                    continue
                try:
                    row = {k: column_values(table.slice(j, 1), k)[0] for k in names}
                except Exception as e:
                    raise fail(r, e) from e
                reason = bad_field(where(r), self.text_field, row)
                if r == 0:
                    raise self._error(reason + FIRST_RECORD)
                yield BadRecord(reason)
            start += table.num_rows

    def partition_record(self, partition: Partition) -> dict[str, Any]:
        if partition.piece is not None:
            rec = self._pieces.pop(partition.key, None)
            return rec if rec is not None else self._piece_record(
                partition, pieces.load(self, partition))
        spec = partition.spec
        out = {"dataset": self.cfg.dataset, "revision": spec["revision"],
               "shard": spec["shard"], "n_shards": spec["n_shards"]}
        if spec["mode"] == "cache":
            out["snapshot"] = spec["target"]
        return out

    def _piece_record(self, partition: Partition, piece: pieces.Piece) -> dict[str, Any]:
        """A piece's record: its shard's, the piece's range of the shard's text (rows' UTF-8
        bytes, one more per row) and the sha256 of its rows as spilled, whether it is last."""
        out = self.partition_record(pieces.stream_of(partition))
        out.update(piece=piece.index, text_start=piece.start, text_end=piece.end,
                   rows_sha256=hashlib.sha256(piece.data).hexdigest(), last=piece.last)
        return out
