"""`shards audit`: planted overlaps and artifacts are found, exactly; clean data reports zero."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import numpy as np
import pytest
from shards_fixture import gpt2, make_dataset

import shards
from shards.__main__ import main
from shards.audit import audit
from shards.tokenizer import EOT_ID

# Each " word" is one GPT-2 token, so token counts below are exact.
TRAIN_WORDS = ["cat", "dog", "house", "tree", "river", "stone", "bird", "field", "road", "light"]
EVAL_WORDS = ["red", "blue", "green", "black", "white", "small", "large", "old", "new", "hot"]


def words(rng: np.random.Generator, vocab: list[str], n: int) -> list[str]:
    return [vocab[i] for i in rng.integers(0, len(vocab), n)]


def text(ws: list[str]) -> str:
    return "Start" + "".join(" " + w for w in ws)


# Between words: whitespace-only tokens (skipped by the n-grams) before the word's own " word"
# token, and two that look like whitespace but are content: "\x1c" (no Unicode White_Space) and
# U+3000 (two tokens, each a fragment of the character).
BLANK = [" "] * 6 + ["\n ", "  ", "\n\n    ", "\t ", "\xa0 ", "\r\n "]
SEPS = BLANK + ["\x1c ", "\u3000 "]


def seps(rng: np.random.Generator, k: int) -> list[str]:
    return [SEPS[i] for i in rng.integers(0, len(SEPS), k)]


def respace(rng: np.random.Generator, ss: list[str]) -> list[str]:
    """`ss` with every whitespace-only separator drawn anew (the content stays the same)."""
    return [BLANK[rng.integers(0, len(BLANK))] if s in BLANK else s for s in ss]


def spaced(rng: np.random.Generator, ws: list[str], ss: list[str] | None = None) -> str:
    """`text(ws)` with separators `ss` (random ones by default) between the words, and now and
    then whitespace at the end."""
    ss = seps(rng, len(ws)) if ss is None else ss
    return "Start" + "".join(s + w for s, w in zip(ss, ws, strict=True)) + \
        ("\n" if rng.random() < 0.3 else "")


def test_words_are_single_tokens() -> None:
    enc = gpt2()
    assert all(len(enc.encode_ordinary(" " + w)) == 1 for w in TRAIN_WORDS + EVAL_WORDS)


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    rng = np.random.default_rng(0)
    train = [words(rng, TRAIN_WORDS, 60) for _ in range(20)]
    passage = train[7][10:30]  # 20 tokens of a train document
    ev = [words(rng, EVAL_WORDS, 40) for _ in range(8)]
    ev[3] = ev[3][:15] + passage + ev[3][15:]
    prose_eval = [words(rng, EVAL_WORDS, 40) for _ in range(4)]
    prose_eval[1] = prose_eval[1][:5] + train[2][:13] + prose_eval[1][5:]  # code train 13-gram
    prose_eval[2] = prose_eval[2][:5] + train[4][:12] + prose_eval[2][5:]  # only 12: no match
    prose_train = [words(rng, EVAL_WORDS[:5], 50) for _ in range(6)]
    code_train = [(text(w), {"repo_name": f"repo{min(i, 3)}"}) for i, w in enumerate(train)]
    code_train[5] = (" " + code_train[5][0] + "\u200b", code_train[5][1])  # lead ws, invisible
    code_train[6] = (code_train[6][0] + "\n", code_train[6][1])  # trailing ws
    root = make_dataset(tmp_path_factory.mktemp("a"), {
        "code": {"train": code_train, "eval": [text(w) for w in ev]},
        "prose": {"train": [text(w) for w in prose_train], "eval": [text(w) for w in prose_eval]},
    }, shard_tokens=256, block_size=16)
    return root, [text(w) for w in ev]


def test_planted_13gram_overlap_is_found(planted: tuple[Path, list[str]]) -> None:
    root, eval_texts = planted
    r = audit(shards.open(root))
    code = r["domains"]["code"]["contamination"]
    enc = gpt2()
    eval_text_tokens = sum(len(enc.encode_ordinary(t)) for t in eval_texts)
    own = code["own_train"]
    assert code["eval_docs"] == 8
    assert own["docs_with_overlap"] == 1 and own["doc_share"] == 1 / 8
    assert own["tokens_covered"] == 20
    assert own["token_share"] == 20 / eval_text_tokens
    assert own["worst"] == [{"index": 3, "covered": round(20 / 61, 4),
                             "source": {"index": 3}}]
    assert code["all_train"]["tokens_covered"] == 20


def test_overlap_with_another_domains_train(planted: tuple[Path, list[str]]) -> None:
    r = audit(shards.open(planted[0]))
    prose = r["domains"]["prose"]["contamination"]
    assert prose["own_train"]["docs_with_overlap"] == 0  # its own train uses other words
    assert prose["own_train"]["token_share"] == 0.0
    assert prose["all_train"]["docs_with_overlap"] == 1  # the 13-gram, not the 12-gram
    assert prose["all_train"]["tokens_covered"] == 13
    assert prose["all_train"]["worst"][0]["index"] == 1


def test_clean_data_reports_zero(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    root = make_dataset(tmp_path, {"code": {
        "train": [text(words(rng, TRAIN_WORDS, 50)) for _ in range(10)],
        "eval": [text(words(rng, EVAL_WORDS, 50)) for _ in range(3)]}})
    code = audit(shards.open(root))["domains"]["code"]
    for which in ("own_train", "all_train"):
        assert code["contamination"][which] == {"docs_with_overlap": 0, "doc_share": 0.0,
                                                "tokens_covered": 0, "token_share": 0.0,
                                                "longest_run": {"tokens": 0, "eval_doc": None},
                                                "worst": []}
    a = code["artifacts"]
    assert (a["invisible_chars"], a["leading_whitespace"], a["trailing_whitespace"],
            a["carriage_returns"], a["control_chars"]) == (0.0, 0.0, 0.0, 0.0, 0.0)
    assert a["invisible_char_counts"] == {}
    assert code["diversity"]["source_key"] is None  # the fixture's provenance names no source


def test_planted_artifacts_are_found(planted: tuple[Path, list[str]]) -> None:
    r = audit(shards.open(planted[0]))
    a = r["domains"]["code"]["artifacts"]
    assert a["docs"] == 20
    assert a["invisible_chars"] == 1 / 20
    assert a["invisible_char_counts"] == {"U+200B ZERO WIDTH SPACE": 1}
    assert a["leading_whitespace"] == 1 / 20
    assert a["trailing_whitespace"] == 1 / 20
    assert a["first_chars"] == [{"char": "S", "share": 19 / 20}, {"char": " ", "share": 1 / 20}]
    assert a["first_tokens"][0] == {"id": gpt2().encode_ordinary("Start")[0], "text": "Start",
                                    "share": 19 / 20}
    assert a["repeated_prefix_share"] == 0.0  # random words: every 20-char prefix differs
    assert r["domains"]["prose"]["artifacts"]["invisible_chars"] == 0.0


def test_repeated_prefixes(tmp_path: Path) -> None:
    header = "# Copyright 2020 ACME Inc.\n"
    root = make_dataset(tmp_path, {"code": {
        "train": [header + f"x = {i}\n" for i in range(6)] + ["y = 1\n" * 5, "short"],
        "eval": ["z = 0\n"]}})
    a = audit(shards.open(root))["domains"]["code"]["artifacts"]
    assert a["repeated_prefixes"] == [{"prefix": "# Copyright 2020 ACM", "docs": 6}]
    assert a["repeated_prefix_share"] == 6 / 8


def test_source_diversity(planted: tuple[Path, list[str]]) -> None:
    d = audit(shards.open(planted[0]))["domains"]["code"]["diversity"]
    assert d["source_key"] == "repo_name"
    assert d["distinct_sources"] == 4
    assert d["top_sources"][0] == {"source": "repo3", "docs": 17}
    assert d["top1_share"] == 17 / 20 and d["top10_share"] == 1.0
    enc = gpt2()
    lengths = [len(enc.encode_ordinary(t)) + 1 for t, _ in planted_code_train(planted[0])]
    assert (d["length_tokens"]["min"], d["length_tokens"]["p50"]) == (62, 62)
    assert d["length_tokens"]["max"] == max(lengths) > 62


def planted_code_train(root: Path) -> list[tuple[str, dict]]:
    sp = shards.open(root).split("code", "train")
    return [(sp.document_text(k), sp.document(k).source) for k in range(sp.num_docs)]


def test_cli_table_and_json(planted: tuple[Path, list[str]],
                            capsys: pytest.CaptureFixture[str]) -> None:
    root = planted[0]
    assert main(["audit", str(root)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^eval docs sharing a 13-gram with own train +12\.50% +0\.00%$", out, re.M)
    assert re.search(r"^longest run shared with own train +20 tokens \(eval doc 3\) +none$", out,
                     re.M)
    assert re.search(r"^docs with invisible characters +5\.00% +0\.00%$", out, re.M)
    assert main(["audit", str(root), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report == json.loads(json.dumps(audit(shards.open(root))))


# --------------------------------------------------------------------------- brute force


@functools.cache
def is_content(t: int) -> bool:
    """Not a whitespace-only token, decided one id at a time in plain Python: its bytes are
    UTF-8 whose characters are all whitespace (str.isspace, less the separators U+001C-U+001F,
    which are not Unicode White_Space). Ids outside the vocabulary are content."""
    if t >= EOT_ID:
        return True
    try:
        s = gpt2().decode_single_token_bytes(t).decode("utf-8")
    except UnicodeDecodeError:
        return True
    return not (s.isspace() and not any("\x1c" <= c <= "\x1f" for c in s))


def _docs(sp: shards.reader.Split, raw: bool = False) -> list[list[int]]:
    """The split's documents as lists of content tokens (`raw`: of all tokens), EOT stripped
    (small data only)."""
    out, cur = [], []
    for t in sp.stream().tolist():
        if t == EOT_ID:
            out.append(cur)
            cur = []
        elif raw or is_content(t):
            cur.append(t)
    return out


def reference(ds: shards.reader.Dataset, n: int, raw: bool = False) -> dict[str, dict]:
    """Contamination by pure Python sets of n-gram tuples of content tokens: the definition,
    slowly (`raw`: of all tokens, the definition before whitespace-only tokens were skipped)."""
    grams = {d: {tuple(doc[i:i + n]) for doc in _docs(ds.split(d, "train"), raw)
                 for i in range(len(doc) - n + 1)} for d in ds.domains if (d, "train") in ds}
    anyg = set().union(*grams.values())
    out = {}
    for d in ds.domains:
        docs = _docs(ds.split(d, "eval"), raw)
        res = {}
        for key, g in (("own_train", grams.get(d, set())), ("all_train", anyg)):
            hit_docs = covered_total = 0
            best = (0, None)
            frac = []
            for k, doc in enumerate(docs):
                found = [tuple(doc[i:i + n]) in g for i in range(len(doc) - n + 1)]
                covered = {i + j for i, f in enumerate(found) if f for j in range(n)}
                hit_docs += any(found)
                covered_total += len(covered)
                run = longest = 0
                for f in found:
                    run = run + 1 if f else 0
                    longest = max(longest, run)
                if longest and longest + n - 1 > best[0]:
                    best = (longest + n - 1, k)
                frac.append(len(covered) / max(len(doc), 1))
            text_tokens = sum(len(doc) for doc in docs)
            worst = sorted(range(len(docs)), key=lambda k: (-frac[k], k))[:5]
            res[key] = {"docs_with_overlap": hit_docs, "doc_share": hit_docs / len(docs),
                        "tokens_covered": covered_total,
                        "token_share": covered_total / text_tokens,
                        "longest_run": {"tokens": best[0], "eval_doc": best[1]},
                        "worst": [{"index": k, "covered": round(frac[k], 4),
                                   "source": {"index": k}} for k in worst if frac[k] > 0]}
        out[d] = res
    return out


@pytest.fixture(scope="module")
def tangled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three domains over tiny vocabularies, so n-grams repeat everywhere: documents of 0 to 60
    words (many shorter than n) with random whitespace between them (`spaced`: the raw token
    stream is not the content stream), documents of whitespace only, shards of 32 tokens
    (documents span shards), and eval documents that splice the end of one train document to
    the start of the next."""
    rng = np.random.default_rng(7)
    vocab = {"code": TRAIN_WORDS[:3], "math": TRAIN_WORDS[2:5], "prose": EVAL_WORDS[:4]}
    data = {}
    for d, v in vocab.items():
        train = [words(rng, v, int(rng.integers(0, 60))) for _ in range(25)]
        tseps = [seps(rng, len(w)) for w in train]
        ev = [words(rng, v + TRAIN_WORDS[:2], int(rng.integers(0, 40))) for _ in range(12)]
        ev.append(train[3][-6:] + ["Start"] + train[4][:6])  # across train's EOT: no match
        evs = [spaced(rng, w) for w in ev]
        # a 20-word passage, its whitespace drawn anew: the same content tokens, a match
        evs.append(spaced(rng, train[10][5:25], respace(rng, tseps[10][5:25])))
        data[d] = {"train": [spaced(rng, w, s) for w, s in zip(train, tseps, strict=True)]
                   + [" \n\n  "], "eval": evs + ["\n\t \n"]}
    return make_dataset(tmp_path_factory.mktemp("t"), data, shard_tokens=32, block_size=16)


@pytest.mark.parametrize(("n", "cache"), [(4, 1 << 16), (4, 4), (13, 1 << 16)])
def test_contamination_equals_brute_force(tangled: Path, n: int, cache: int,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Also with a 4-entry lookup cache in the train scan: slots overwritten all the time."""
    from shards.audit_overlap import TrainScan
    monkeypatch.setattr(TrainScan, "CACHE", cache)
    ds = shards.open(tangled)
    want = reference(ds, n)
    got = audit(ds, n=n, checks=("contamination",))
    assert got["problems"] == []
    for d in ds.domains:
        c = got["domains"][d]["contamination"]
        assert c["eval_docs"] == ds.split(d, "eval").num_docs
        assert {k: c[k] for k in ("own_train", "all_train")} == want[d], d
    # the figures are not all trivially zero or one
    code = got["domains"]["code"]["contamination"]["own_train"]
    assert 0 < code["docs_with_overlap"] <= ds.split("code", "eval").num_docs
    assert code["longest_run"]["tokens"] >= 20
    if n == 13:
        assert code["docs_with_overlap"] < ds.split("code", "eval").num_docs
        assert 0 < code["token_share"] < 1
        # the whitespace matters: on all tokens the figures differ (the re-spaced passage
        # shares no 20-token run with train there)
        raw = reference(ds, n, raw=True)
        assert raw["code"]["own_train"]["longest_run"]["tokens"] < 20
        assert all(raw[d] != want[d] for d in ds.domains)


def test_spliced_train_documents_do_not_match(tmp_path: Path) -> None:
    """An eval document made of the end of one train document and the start of the next shares
    no 13-gram with train: the n-grams across train's EOT do not exist."""
    rng = np.random.default_rng(3)
    a, b = words(rng, TRAIN_WORDS, 30), words(rng, TRAIN_WORDS, 30)
    root = make_dataset(tmp_path, {"code": {
        "train": [text(a), text(b)],
        "eval": [" ".join(a[-8:]) + " Start " + " ".join(b[:8]),  # 8 + 1 + 8 tokens
                 " ".join(a[-12:]) + " Start"]}})  # 12 + 1: the EOT would be the 13th
    own = audit(shards.open(root))["domains"]["code"]["contamination"]["own_train"]
    assert own["docs_with_overlap"] == 0 and own["longest_run"]["tokens"] == 0


STACK = '''class Stack:
    """A last-in, first-out stack of items."""

    def __init__(self):
        self.items = []

    def peek(self):
        return self.items[-1]
'''


def test_reindented_code_is_contamination_shared_indentation_is_not(tmp_path: Path) -> None:
    """Eval holds a train class re-indented (4 -> 8 spaces, tabs nowhere): every content token
    of it is covered, the run is the whole document; a different class sharing only `(self):`,
    a newline, 8 spaces and `return self.` (a 13-gram of all tokens) shares nothing."""
    point = "class Point:\n    def norm(self):\n        return self.x * self.x + self.y * self.y\n"
    copy = STACK.replace("\n    ", "\n        ")
    root = make_dataset(tmp_path, {"code": {"train": [STACK, "x = 1\n"], "eval": [copy, point]}})
    own = audit(shards.open(root))["domains"]["code"]["contamination"]["own_train"]
    size = sum(map(is_content, gpt2().encode_ordinary(copy)))
    assert size < len(gpt2().encode_ordinary(copy)) - 10
    assert own["docs_with_overlap"] == 1 and own["tokens_covered"] == size
    assert own["longest_run"] == {"tokens": size, "eval_doc": 0}
    assert own["worst"] == [{"index": 0, "covered": 1.0, "source": {"index": 0}}]
    assert own["token_share"] == size / (size + sum(map(is_content, gpt2().encode_ordinary(point))))


@pytest.mark.parametrize("chunk", [1, 5, 13, 31, 64, 1 << 22])
def test_chunk_size_changes_nothing(tangled: Path, chunk: int) -> None:
    """Chunks of 1 token up to the whole split: documents and n-grams across chunk and shard
    boundaries are neither lost nor invented, for every check."""
    ds = shards.open(tangled)
    assert audit(ds, chunk_tokens=chunk) == audit(ds, chunk_tokens=1 << 22)


def test_train_is_never_loaded_whole(tangled: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: shards.reader.Split) -> None:
        raise AssertionError(f"{self} read whole")
    monkeypatch.setattr(shards.reader.Split, "stream", refuse)
    monkeypatch.setattr(shards.reader.Split, "documents", refuse)
    report = audit(shards.open(tangled), chunk_tokens=16)
    assert report["domains"]["code"]["contamination"]["eval_docs"] == 15


# --------------------------------------------------------------------------- text checks

INVISIBLE = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e"
    "\u2060-\u2064\u2066-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff9-\ufffb]")
CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def _show(s: str) -> str:
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in s)


def reference_artifacts(sp: shards.reader.Split) -> dict:
    """The audit's format-artifact figures by decoding every document and searching its text
    (the algorithm before streaming; the definition)."""
    import unicodedata
    from collections import Counter
    enc = gpt2()
    stream = np.asarray(sp.stream())
    docs = sp.documents()
    n = len(docs)
    lead = trail = invis = cr = ctrl = 0
    inv: Counter[str] = Counter()
    first: Counter[str] = Counter()
    prefixes: Counter[str] = Counter()
    for k, d in enumerate(docs):
        b = int(sp.doc_starts[k])
        t = enc.decode_bytes(stream[b:b + d.tokens - 1].tolist()).decode("utf-8", "replace")
        lead += t[:1].isspace()
        trail += t[-1:].isspace()
        found = INVISIBLE.findall(t)
        invis += bool(found)
        inv.update(found)
        cr += "\r" in t
        ctrl += CONTROL.search(t) is not None
        first[t[:1]] += 1
        if len(t) >= 20:
            prefixes[t[:20]] += 1
    ids = Counter(stream[sp.doc_starts].tolist())
    return {
        "docs": n, "damaged_docs": 0,
        "leading_whitespace": lead / n, "trailing_whitespace": trail / n,
        "invisible_chars": invis / n,
        "invisible_char_counts": {f"U+{ord(c):04X} {unicodedata.name(c, '?')}": v
                                  for c, v in inv.most_common()},
        "carriage_returns": cr / n, "control_chars": ctrl / n,
        "first_chars": [{"char": _show(c), "share": v / n} for c, v in first.most_common(10)],
        "first_tokens": [{"id": t, "text": _show(enc.decode_bytes([t]).decode("utf-8", "replace")),
                          "share": v / n} for t, v in ids.most_common(10)],
        "repeated_prefix_share": sum(c for c in prefixes.values() if c > 1) / n,
        "repeated_prefixes": [{"prefix": _show(p), "docs": c}
                              for p, c in prefixes.most_common(10) if c > 1]}


UNICODE_DOCS = [
    "\u200bstarts with a zero width space", "\ufeffBOM then text that is long enough",
    "soft\u00adhyphen, and then some more text", "line one\r\nline two\r\n", "bell \x07 char",
    "next line \x85 is a C1 control and a space", "\u3000ideographic space first",
    "\xa0no-break space first, long enough", "ends with a no-break space\xa0",
    "ends with an emoji \U0001F600", "émigré first, a non-ASCII prefix shared",
    "émigré first, a non-ASCII prefix shared too", "日本語のテキストです。これは二十文字以上の文章です。",
    "short", "\u2066isolate\u2069 bidi controls", "zero\u200cwidth\u200dnon-joiner\u200c",
    "\tleading tab", "trailing newline\n", "a\u200bb\u200bc\u200b three times", "del \x7f char",
    "\U0001F600 emoji first and some words", "\ufff9annotation\ufffb", "Ⅻ roman numeral",
    "\u2028line separator first", "ends with a line separator\u2028", "x\u180ey mongolian",
    "\u00ad", "é", "\x85", "\u3164\u3164\u3164\u3164\u3164\u3164\u3164\u3164\u3164\u3164"
    "\u3164\u3164\u3164\u3164\u3164\u3164\u3164\u3164\u3164\u3164 hangul fillers",
] + ["# Copyright 2020 ACME Inc.\nx = 1\n"] * 3 + ["Ünïcödé prefix repeated: same twenty"] * 2


@pytest.fixture(scope="module")
def unicode_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    docs = [(t, {"repo_name": f"r{i % 4}"} if i % 13 else {"other": 1})
            for i, t in enumerate(UNICODE_DOCS)]
    return make_dataset(tmp_path_factory.mktemp("u"), {
        "code": {"train": docs, "eval": ["z = 0\n"]}}, shard_tokens=32, block_size=16)


@pytest.mark.parametrize("chunk", [3, 1 << 22])
def test_artifacts_equal_decoding_every_document(unicode_set: Path, chunk: int) -> None:
    ds = shards.open(unicode_set)
    got = audit(ds, chunk_tokens=chunk)["domains"]["code"]["artifacts"]
    want = reference_artifacts(ds.split("code", "train"))
    assert got == want
    assert want["invisible_chars"] > 0 and want["control_chars"] > 0
    assert want["repeated_prefixes"][0]["docs"] == 3
    assert len(want["invisible_char_counts"]) >= 8


def test_diversity_equals_the_whole_index(unicode_set: Path) -> None:
    sp = shards.open(unicode_set).split("code", "train")
    d = audit(shards.open(unicode_set))["domains"]["code"]["diversity"]
    docs = sp.documents()
    lengths = np.array([x.tokens for x in docs])
    chars = np.array([x.chars for x in docs])
    assert d["docs"] == len(docs) == len(UNICODE_DOCS)
    assert d["source_key"] == "repo_name"  # 32 of 35 documents have it
    from collections import Counter
    names = Counter(str(x.source.get("repo_name")) for x in docs)
    assert d["distinct_sources"] == len(names) == 5  # r0..r3, and "None" for 3 without one
    assert d["top_sources"] == [{"source": s, "docs": c} for s, c in names.most_common(10)]
    p = np.percentile(lengths, [10, 50, 90, 99])
    assert d["length_tokens"] == {"min": int(lengths.min()), "p10": p[0], "p50": p[1],
                                  "p90": p[2], "p99": p[3], "max": int(lengths.max()),
                                  "mean": float(lengths.mean())}
    assert d["length_chars"]["p90"] == np.percentile(chars, 90)


# --------------------------------------------------------------------------- damaged shards


@pytest.fixture
def damaged(tmp_path: Path) -> Path:
    rng = np.random.default_rng(5)
    train = [text(words(rng, TRAIN_WORDS, 30)) for _ in range(6)]
    train[2] = "module = 1\n" + train[2]  # "module" is token 21412 (0x53A4)
    return make_dataset(tmp_path, {
        "code": {"train": train, "eval": [text(words(rng, EVAL_WORDS, 30)) for _ in range(3)]},
        "prose": {"train": train[:2], "eval": [train[0]]}}, shard_tokens=64, block_size=16)


def _flip(root: Path, domain: str, split: str, find: int | None, value: int) -> tuple[Path, int]:
    """Overwrite one token id in place (the token `find`, else the 20th); (shard, offset)."""
    sp = shards.open(root).split(domain, split)
    for rec in sp.record.shards:
        path = root / rec.path
        toks = np.memmap(path, dtype=np.uint16, mode="r+")
        hits = np.flatnonzero(toks == find) if find is not None else np.array([20])
        if len(hits) and hits[0] < len(toks):
            off = int(hits[0])
            toks[off] = value
            toks.flush()
            return path, off
    raise AssertionError(f"token {find} not in {domain}/{split}")


@pytest.mark.parametrize("value", [50300, 65535, 21412 ^ 0x8000])
def test_invalid_ids_are_problems_not_tracebacks(damaged: Path, value: int,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """A token id >= the vocabulary (a bit flip turns 'module', 21412, into 54180) in a train
    shard, at a document's first token: one PROBLEM line naming the file and the offset, exit
    1, the figures computed without the damaged document, and nothing decodes the id."""
    path, off = _flip(damaged, "code", "train", 21412, value)
    assert main(["audit", str(damaged)]) == 1
    out = capsys.readouterr().out
    problems = [x for x in out.splitlines() if x.startswith("PROBLEM")]
    assert problems == [f"PROBLEM: {path}: 1 token id(s) >= vocab size 50257 (first at token "
                        f"offset {off}: {value}); the shard is damaged: re-copy the dataset or "
                        "re-run prep"]
    assert "FAILED: 1 problem(s)" in out
    a = audit(shards.open(damaged))["domains"]["code"]["artifacts"]
    assert (a["docs"], a["damaged_docs"]) == (5, 1)
    assert all(t["id"] < 50257 for t in a["first_tokens"])
    assert a["first_chars"] == [{"char": "S", "share": 1.0}]


@pytest.mark.parametrize("split", ["train", "eval"])
def test_invalid_ids_in_json_mode(damaged: Path, split: str,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    path, off = _flip(damaged, "prose", split, None, 65535)
    assert main(["audit", str(damaged), "--json"]) == 1
    cap = capsys.readouterr()
    report = json.loads(cap.out)  # stdout stays JSON; the PROBLEM lines go to stderr
    assert len(report["problems"]) == 1
    assert f"{path}: 1 token id(s) >= vocab size 50257 (first at token offset {off}: 65535)" \
        in report["problems"][0]
    assert cap.err.startswith(f"PROBLEM: {path}: ")
    assert report["domains"]["code"]["contamination"]["eval_docs"] == 3


def test_lost_eot_is_a_problem(damaged: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = _flip(damaged, "code", "eval", EOT_ID, 3797)  # the first EOT becomes " cat"
    assert main(["audit", str(damaged)]) == 1
    out = capsys.readouterr().out
    assert "code/eval hold 2 documents (EOT-ended) but the manifest declares 3" in out
    assert out.count("PROBLEM: ") == 1


def test_checks_option(tangled: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", str(tangled), "--checks", "contamination", "--ngram", "4"]) == 0
    out = capsys.readouterr().out
    assert "exact 4-grams" in out and "format artifacts" not in out and "diversity" not in out
    assert main(["audit", str(tangled), "--checks", "artifacts,typo"]) == 2
    assert "unknown check(s) typo" in capsys.readouterr().err


# --------------------------------------------------------------------------- the benchmark


def test_bench_contenders_agree(tangled: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The benchmark's two contenders (the audit before streaming, kept as its baseline, and
    this one) give the same contamination figures."""
    from shards.bench_audit import bench_index, child
    from shards.console import Out
    figures = {}
    for which in ("old", "new"):
        assert child(which, str(tangled), "contamination") == 0
        figures[which] = json.loads(capsys.readouterr().out)["figures"]
    assert figures["old"] == figures["new"] and figures["new"]["code"]["own_train"][0] > 0
    fig = bench_index([1000], Out(), queries=4096)
    assert fig[1000]["fp"] < 0.05 and "Bloom filter alone" in capsys.readouterr().out
