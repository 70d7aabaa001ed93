"""The pipeline of steps and commit hooks (`prep.steps`): a new step, counter, column or hook is
one class and one recipe key, and its counts reach done.json, the manifest, prep's summary and
`shards inspect` with no other code; determinism, cap levels, slices and resume hold."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prep_fixture import manifest, run_prep, same_dataset, write_jsonl, write_recipe
from steps_fixture import COMPONENTS, FAMILY, OPTS, corpus, doc, load_index, texts

import shards
from prep.__main__ import main as prep_main
from prep.parts import DONE_NAME, TaskParts
from prep.split import assign_split
from prep.steps import (
    Counters,
    Filter,
    Option,
    PrepareContext,
    Step,
    TaskContext,
    TaskError,
    registered,
)
from prep.workdir import WORK_PREFIX
from shards.__main__ import main as shards_main


@pytest.fixture(autouse=True)
def components():
    with registered(*COMPONENTS):
        yield


# --------------------------------------------------------------------------- tests


def test_a_step_and_its_counter_reach_records_manifest_progress_and_inspect(tmp_path, capsys):
    recipe = corpus(tmp_path, alpha={"drop_markers": ["XYZZY", "PLUGH"]})
    out = tmp_path / "out"
    # slices leave the tasks' completion records in the work directory; the commit publishes
    for i in range(2):
        assert run_prep("--recipe", str(recipe), "--out", str(out), *OPTS, "--workers", "2",
                        "--num-tasks", "2", "--task-index", str(i)) == 0
    (work,) = out.glob(f"{WORK_PREFIX}*")
    records = [json.loads(p.read_text()) for p in sorted(work.glob(f"tasks/*/{DONE_NAME}"))]
    alpha = [r["counts"] for r in records if r["domain"] == "alpha"]
    assert len(alpha) > 4 and all("docs_marked" in c for c in alpha)
    assert sum(c["docs_marked"] for c in alpha) == 27
    assert sum(c["docs_marked:PLUGH"] for c in alpha) == 7
    assert all("docs_marked" not in r["counts"] for r in records if r["domain"] == "beta")
    capsys.readouterr()
    assert prep_main(["--recipe", str(recipe), "--out", str(out), *OPTS, "--commit-only"]) == 0
    progress = capsys.readouterr().out  # not a terminal: the plain reporter's lines
    assert re.search(r"^\W*docs_marked\W+27\W*$", progress, re.M)  # beta: no such counter
    assert re.search(r"^\W*docs_marked:XYZZY\W+20\W*$", progress, re.M)

    m = manifest(out)
    a, b = m["domains"]["alpha"], m["domains"]["beta"]
    assert a["steps"] == ["read", "length_filter", "drop_marked", "shuffle", "hash_split",
                          "minhash", "tokenize"]
    assert b["steps"] == ["read", "length_filter", "shuffle", "hash_split", "minhash",
                          "tokenize"]
    c = a["counts"]
    assert (c["docs_marked"], c["docs_marked:XYZZY"], c["docs_marked:PLUGH"]) == (27, 20, 7)
    assert list(c)[:8] == ["docs_seen", "bytes_seen", "docs_bad", "docs_empty",
                           "docs_too_short", "docs_too_long", "docs_filtered", "docs_marked"]
    assert c["docs_seen"] == c["docs_filtered"] + c["docs_marked"] + c["docs_deduplicated"] \
        + c["docs_near_duplicates"] + c["docs_kept"] + c["docs_over_budget"] + c["docs_bad"]
    assert "docs_marked" not in b["counts"]
    assert m["recipe"]["domains"][0]["drop_markers"] == ["XYZZY", "PLUGH"]
    kept = texts(out, "alpha")
    assert not any("XYZZY" in t or "PLUGH" in t for s in kept.values() for t in s)
    assert sum("XYZZY" in t for s in texts(out, "beta").values() for t in s) == 5

    assert shards_main(["inspect", str(out)]) == 0
    shown = capsys.readouterr().out
    assert re.search(r"^docs_marked +27 *$", shown, re.M)
    assert re.search(r"^docs_marked:PLUGH +7 *$", shown, re.M)
    assert re.search(r"^docs_kept +[\d,]+ +[\d,]+$", shown, re.M)
    assert shards_main(["inspect", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["domains"]["alpha"]["counts"]["docs_marked:XYZZY"] == 20
    assert ["docs_marked", 27, None] in info["counts"]


def test_recipe_keys_of_steps_are_checked_like_the_others(tmp_path, capsys):
    out = str(tmp_path / "out")
    for table, message in (
            ({"drop_markers": "XYZZY"}, "[domains.alpha] drop_markers must be a list of strings"),
            ({"drop_markers": [" "]}, "[domains.alpha]: drop_markers: an empty word"),
            ({"family_mode": "merge"}, "family_mode must be remove or group, got 'merge'"),
            ({"listed_words": "nope.txt"}, f"listed_words: no file {tmp_path}/nope.txt"),
            ({"drop_marker": ["X"]}, "unknown key(s) drop_marker; allowed: ")):
        recipe = corpus(tmp_path, files=1, per_file=100, alpha=table)
        assert run_prep("--recipe", str(recipe), "--out", out) == 1
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err


def test_steps_are_ordered_by_what_they_need(tmp_path, capsys):
    class TooEarly(Step):
        name, order = "too_early", 350  # before tokenize ...
        needs = ("tokens",)  # ... but needs token ids

        def run(self, docs: Any) -> Any:
            return docs

    with registered(TooEarly):
        recipe = corpus(tmp_path, files=1, per_file=100)
        assert run_prep("--recipe", str(recipe), "--out", str(tmp_path / "o")) == 1
    assert ("step too_early (order 350) needs tokens, which no earlier step provides"
            in capsys.readouterr().err)


@pytest.mark.parametrize("mode", ["remove", "group"])
def test_a_column_and_a_commit_hook_that_drops_or_moves_documents(tmp_path, mode):
    """What near-duplicate clusters need: a per-document column written by a worker step, read
    by a commit hook in plan order across tasks and domains, dropping members (remove) or
    moving them to their kept member's split (group); the same bytes for 1 or 3 workers."""
    keys = {"family_mode": mode}
    recipe = corpus(tmp_path, alpha=keys, beta=keys)
    a, b = tmp_path / "a", tmp_path / "b"
    assert run_prep("--recipe", str(recipe), "--out", str(a), *OPTS, "--workers", "1") == 0
    assert run_prep("--recipe", str(recipe), "--out", str(b), *OPTS, "--workers", "3") == 0
    same_dataset(a, b)
    m = manifest(a)
    members: dict[int, list[tuple[str, str]]] = {}
    for name in ("alpha", "beta"):
        assert m["domains"][name]["steps"][-1] == "family_tag"
        assert m["domains"][name]["commit_hooks"] == ["exact_dedup", "family", "near_dedup"]
        for split, docs in texts(a, name).items():
            for t in docs:
                if (f := FAMILY.search(t)) is not None:
                    members.setdefault(int(f.group(1)), []).append((split, t))
    assert len(members) == 30
    counts = [m["domains"][n]["counts"] for n in ("alpha", "beta")]
    assert sum(c["families_of_size:3"] for c in counts) == 30  # counted by the hook's finish
    assert sum(c["families_of_size:1"] + c["families_of_size:2"] for c in counts) == 0
    if mode == "remove":
        assert all(len(v) == 1 for v in members.values())
        assert sum(c["docs_family_removed"] for c in counts) == 60
    else:
        assert all(len(v) == 3 and len({s for s, _ in v}) == 1 for v in members.values())
        salt = m["split_salt"]
        moved = sum(assign_split(t.encode(), salt, 0.05) != s
                    for v in members.values() for s, t in v)
        assert moved > 0 and sum(c["docs_family_moved"] for c in counts) == moved
        n_eval = sum(len(texts(a, n)["eval"]) for n in ("alpha", "beta"))
        assert n_eval == sum(m["domains"][n]["splits"]["eval"]["docs"] for n in ("alpha", "beta"))


def test_cap_levels_with_a_dropping_hook_give_the_same_bytes_for_any_workers(tmp_path):
    """Hooks drop over half the candidates, so the commit asks for both partitions again with a
    larger cap (the budget is then not reached: the data ran out); every hook sees the same
    stream prefix: the same bytes for 1 or 3 workers, straight or in slices."""
    rng = random.Random(3)
    base = [doc(rng) for _ in range(300)]
    docs = base + base + [doc(rng, f"fam{f}") for f in range(60) for _ in range(3)]
    rng.shuffle(docs)
    for k in range(2):
        write_jsonl(tmp_path / f"d{k}.jsonl", docs[k::2])
    table = {"source": "json", "data_files": ["d0.jsonl", "d1.jsonl"], "min_chars": 10,
             "family_mode": "remove", "size_mb": 0.12}
    recipe = write_recipe(tmp_path / "r.toml", {"alpha": table}, seed=5)
    opts = ("--partition-mb", "0.2", "--interleave", "2", "--min-eval-docs", "1",
            "--shuffle-buffer", "40")
    runs = []
    for w in ("1", "3"):
        out = tmp_path / f"w{w}"
        if w == "1":
            assert run_prep("--recipe", str(recipe), "--out", str(out), *opts, "--workers", w) == 0
        else:
            for i in range(2):
                assert run_prep("--recipe", str(recipe), "--out", str(out), *opts, "--workers",
                                w, "--num-tasks", "2", "--task-index", str(i)) == 0
            assert run_prep("--recipe", str(recipe), "--out", str(out), *opts, "--workers", w,
                            "--commit-only") == 0
        runs.append(out)
    same_dataset(*runs)
    dom = manifest(runs[0])["domains"]["alpha"]
    assert [p["level"] for p in dom["partitions"]] == [1, 1]  # read again with a larger cap
    c = dom["counts"]
    assert (c["docs_deduplicated"], c["docs_family_removed"], c["docs_kept"]) == (300, 120, 360)


def test_capped_task_output_is_a_prefix_of_the_larger_caps(tmp_path):
    from prep.config import PrepConfig
    from prep.plan import make_plan
    from prep.task import TaskJob, run_task

    recipe = corpus(tmp_path, files=1, per_file=600, alpha={"family_mode": "group",
                                                            "drop_markers": ["XYZZY"]})
    plan = make_plan(PrepConfig(recipe=str(recipe), out=str(tmp_path / "o"), size_mb=0.02,
                                partition_mb=1, shuffle_buffer=50))
    d = plan.domains[0]
    tasks = tmp_path / "tasks"
    parts = []
    for level in range(3):
        spec = d.task(d.order[0], level)
        rec = run_task(TaskJob(spec, d.settings, str(tasks)))
        parts.append((rec, TaskParts(tasks / spec.id)))
    assert [r.exhausted for r, _ in parts] == [False, False, True]
    for (ra, pa), (rb, pb) in zip(parts, parts[1:], strict=False):
        n = ra.docs
        assert 0 < n < rb.docs
        assert pa.meta.tobytes() == pb.meta[:n].tobytes()
        assert np.array_equal(pa.column("family"), pb.column("family")[:n])
        assert pa.sources == pb.sources[:n]
        assert all(ra.counts[k] <= rb.counts[k] for k in ra.counts)
    assert parts[-1][0].counts["docs_marked"] == parts[-1][0].counts["docs_marked:XYZZY"] == 20


def test_a_step_failing_a_task_names_the_document_and_resume_finishes(tmp_path, monkeypatch,
                                                                      capsys):
    recipe = corpus(tmp_path, alpha={"explode_on": "NEVER-THERE"})
    straight, out = tmp_path / "straight", tmp_path / "out"
    assert run_prep("--recipe", str(recipe), "--out", str(straight), *OPTS) == 0
    monkeypatch.setenv("TEST_EXPLODE", "PLUGH")  # 7 documents of alpha: their tasks fail
    assert run_prep("--recipe", str(recipe), "--out", str(out), *OPTS, "--workers", "2") == 1
    err = capsys.readouterr().err
    assert "re-encoding gave other token ids" in err and f"file {tmp_path}/alpha" in err
    assert not (out / "manifest.json").exists() and list(out.glob(f"{WORK_PREFIX}*"))
    monkeypatch.delenv("TEST_EXPLODE")
    assert run_prep("--recipe", str(recipe), "--out", str(out), *OPTS, "--resume") == 0
    same_dataset(out, straight)


def test_a_shared_resource_is_loaded_once_per_worker(tmp_path):
    words = tmp_path / "words.txt"
    words.write_text("river music\n")
    recipe = corpus(tmp_path, alpha={"listed_words": "words.txt"})  # next to the recipe
    out = tmp_path / "out"
    load_index.cache_clear()
    assert run_prep("--recipe", str(recipe), "--out", str(out), *OPTS, "--workers", "2") == 0
    loads = words.with_suffix(".loads").read_text().split()
    tasks = len(manifest(out)["domains"]["alpha"]["partitions"])
    assert tasks > 4 and 1 <= len(loads) <= 2 and len(set(loads)) == len(loads)
    c = manifest(out)["domains"]["alpha"]["counts"]
    assert 0 < c["docs_listed"] <= c["docs_seen"]


def test_counting_an_undeclared_counter_fails_the_task() -> None:
    task = TaskContext("d", "p", 0, 0, 1, Counters.of(["docs_seen"]))
    task.count("docs_seen", 2)
    assert task.counters == {"docs_seen": 2}
    with pytest.raises(TaskError, match="counter 'docs_sene' is not declared by any step"):
        task.count("docs_sene")
    with pytest.raises(KeyError, match="counter 'docs_x' is not declared"):
        task.counters["docs_x"] += 1  # as a commit hook counts
    with pytest.raises(ValueError, match="counter name 'Docs' is not allowed"):
        Counters.of(["Docs"])


def test_version_1_manifests_are_still_read_and_bad_counter_names_refused(tmp_path, capsys):
    recipe = corpus(tmp_path, files=1, per_file=100)
    out = tmp_path / "out"
    assert run_prep("--recipe", str(recipe), "--out", str(out), "--min-eval-docs", "1") == 0
    path = out / "manifest.json"
    m = json.loads(path.read_text())
    m["format_version"] = 1  # as prep wrote it before the pipeline of steps
    for dom in m["domains"].values():
        del dom["steps"], dom["commit_hooks"]
        dom["counts"] = {**dom["counts"], "docs_split_conflicts": 0}
    path.write_text(json.dumps(m))
    ds = shards.open(out)
    assert ds.manifest.domains["alpha"].counts["docs_split_conflicts"] == 0
    assert ds.manifest.domains["alpha"].steps == []
    assert shards_main(["inspect", str(out)]) == 0
    assert re.search(r"^docs_split_conflicts +0 +0$", capsys.readouterr().out, re.M)
    m["domains"]["alpha"]["counts"]["Bad Name"] = 1
    path.write_text(json.dumps(m))
    with pytest.raises(shards.FormatError, match=r"domains\.alpha\.counts key is 'Bad Name'"):
        shards.open(out)


def test_a_task_record_of_another_prep_version_is_redone(tmp_path):
    """done.json of prep before the pipeline (fixed counts, version 1) is not trusted: the
    task is redone (WorkDir.finished drops a task without a readable record)."""
    from prep.parts import RECORD_VERSION, read_record

    task = tmp_path / "alpha.000000.L0"
    task.mkdir()
    old = {"task": task.name, "domain": "alpha", "partition": "a", "partition_index": 0,
           "level": 0, "cap_bytes": None, "cap_tokens": None, "exhausted": True,
           "counts": {"docs_seen": 1, "docs": 1, "bytes": 5, "tokens": 2}, "bad_examples": [],
           "files": {}, "provenance": None, "version": 1}
    (task / DONE_NAME).write_text(json.dumps(old))
    assert read_record(task) is None and RECORD_VERSION == 2


def test_a_step_key_takes_a_command_line_flag_of_the_same_name(tmp_path):
    from prep.config import PrepConfig
    from prep.recipe import load_recipe

    recipe = load_recipe(str(corpus(tmp_path, files=1, per_file=100,
                                    alpha={"drop_markers": ["XYZZY"]})))
    alpha, beta = recipe.domains
    cli = PrepConfig()
    assert alpha.resolved(cli).options["drop_markers"] == ["XYZZY"]
    assert beta.resolved(cli).options["drop_markers"] == []  # the default, filled in
    cli.drop_markers = ["PLUGH"]  # as a PrepConfig field `drop_markers` would be set
    assert alpha.resolved(cli).options["drop_markers"] == ["PLUGH"]
    assert alpha.to_dict()["drop_markers"] == ["XYZZY"] and "options" not in alpha.to_dict()


class StopWords(Filter):
    """A top-level recipe key and a resource built once at plan time (the mechanism benchmark
    decontamination uses): the coordinator writes the word list into the run's cache directory,
    the workers find it through ``cfg.prepared``."""

    name, order = "stop_words", 160
    options = {"stop_words": Option(list[str] | None, None, "drop documents holding one",
                                    top=True)}
    counters = ("docs_stopped",)
    needs = ("text",)
    prepared_for: list[str] = []

    @classmethod
    def enabled(cls, cfg: Any) -> bool:
        return cfg.options["stop_words"] is not None

    @classmethod
    def prepare(cls, cfg: Any, ctx: PrepareContext) -> Any:
        cls.prepared_for.append(cfg.name)
        words = sorted(cfg.options["stop_words"])
        ctx.cache_dir.mkdir(parents=True, exist_ok=True)
        (ctx.cache_dir / "stop.txt").write_text("\n".join(words))
        return {"file": "stop.txt", "words": len(words)}

    def __init__(self, settings: Any, task: TaskContext) -> None:
        super().__init__(settings, task)
        folder = Path(settings.read.cache_dir)
        self.words = (folder / settings.cfg.prepared[self.name]["file"]).read_text().split()

    def drop(self, doc: Any) -> str | None:
        return "docs_stopped" if any(w in doc.text for w in self.words) else None


def test_a_top_level_key_and_a_plan_time_resource(tmp_path, capsys):
    recipe = corpus(tmp_path)
    recipe.write_text('stop_words = ["XYZZY"]\n' + recipe.read_text())
    out = tmp_path / "out"
    StopWords.prepared_for.clear()
    with registered(StopWords):
        assert run_prep("--recipe", str(recipe), "--out", str(out), *OPTS, "--workers",
                        "2") == 0
        m = manifest(out)
        assert StopWords.prepared_for == ["alpha", "beta"]  # in the coordinator, per domain
        assert [m["domains"][d]["counts"]["docs_stopped"] for d in ("alpha", "beta")] == [20, 5]
        assert m["recipe"]["stop_words"] == ["XYZZY"]
        assert all("stop_words" not in d for d in m["recipe"]["domains"])
        assert (out / ".prep-cache" / "stop.txt").read_text() == "XYZZY"
        recipe.write_text(recipe.read_text().replace("[domains.beta]\n",
                                                     '[domains.beta]\nstop_words = ["X"]\n'))
        assert run_prep("--recipe", str(recipe), "--out", str(tmp_path / "o2")) == 1
        assert "[domains.beta] stop_words: a top-level key" in capsys.readouterr().err
