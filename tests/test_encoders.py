"""Encoder backends: the same ids as tiktoken, the conformance check, the code point guard.

A Rust backend runs only in a forked child here (`in_child`): the test process forks prep's
workers later, and a process that has run a Rust thread pool must not fork children that use it.
"""

from __future__ import annotations

import multiprocessing as mp
import random
import sys
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest
from conformance_cases import handwritten

import shards.tokenizer as tok
from shards import codepoints, conformance
from shards.conformance import EncoderMismatch, SampledCheck
from shards.encoders import FAST_BACKENDS, Backend, Encoder, GigatokenEncoder, TokenizerError

EOT_TEXT_IDS = [27, 91, 437, 1659, 5239, 91, 29]
ALL = ("tiktoken", *FAST_BACKENDS)


def in_child(fn, *args, method: str = "fork"):
    with ProcessPoolExecutor(1, mp_context=mp.get_context(method)) as pool:
        return pool.submit(fn, *args).result()


def installed(name: str) -> None:
    if name != "tiktoken" and not FAST_BACKENDS[name].installed():
        pytest.skip(f"{name} is not installed (pip install 'moe-shards[fast]')")


@pytest.fixture
def fresh(monkeypatch):
    """Empty per-process caches, restored after (the encoders and the choice)."""
    tok._chosen.cache_clear()
    yield monkeypatch
    monkeypatch.undo()
    tok._chosen.cache_clear()


# --------------------------------------------------------------------------- real backends


def _corpus_mismatches(name: str) -> tuple[list[str], str, int]:
    enc = tok.load_encoder(name)
    corpus = conformance.load_corpus()
    stored = corpus.reference["digests"]
    bad = [case for case, text in corpus.texts()
           if conformance.digest(enc.encode_document(text)) != stored[case]]
    return bad, enc.label, getattr(enc, "routed", 0)


@pytest.mark.parametrize("name", ALL)
def test_every_backend_writes_tiktokens_ids_on_the_conformance_corpus(name):
    installed(name)
    bad, label, routed = in_child(_corpus_mismatches, name)
    assert label.startswith(name) and bad == []
    if name == "gigatoken":  # the random plane-3 cases hold Unicode 17 letters: to tiktoken
        assert routed >= 4


def _eot_ids(name: str) -> list[int]:
    enc = tok.load_encoder(name)
    return enc.encode_document("<|endoftext|>").tolist() + enc.encode_document(
        "a<|endoftext|>b").tolist()


@pytest.mark.parametrize("name", ALL)
def test_literal_endoftext_is_ordinary_text_in_every_backend(name):
    installed(name)
    assert in_child(_eot_ids, name) == [*EOT_TEXT_IDS, 50256, 64, *EOT_TEXT_IDS, 65, 50256]


def _fastokens_guard() -> tuple[list[int], list[int], list[int], int, str]:
    enc = tok.load_encoder("fastokens")
    text = "a \u180eb and \u180e\u180e1"
    before = enc.routed  # the conformance check's own (the corpus holds U+180E)
    return (enc.fast.encode_document(text).tolist(), enc.encode_document(text).tolist(),
            tok.reference_encoder().encode_document(text).tolist(), enc.routed - before,
            tok.choose_backend("fastokens").describe())


def test_the_guard_sends_a_code_point_the_backend_classes_differently_to_tiktoken():
    """fastokens 0.3.5 takes U+180E (MONGOLIAN VOWEL SEPARATOR) for whitespace, tiktoken does
    not: alone it writes other ids; guarded, the document goes to tiktoken."""
    installed("fastokens")
    raw, guarded, want, routed, note = in_child(_fastokens_guard)
    assert guarded == want and routed == 1
    assert raw != want  # what the scan found: remove the guard and the ids differ
    assert note == ("fastokens 0.3.5 (--tokenizer-backend fastokens; documents holding one of "
                    "the 1 code point (U+180E) it classes unlike tiktoken are encoded by "
                    "tiktoken)")


def _divergent(name: str) -> tuple[tuple[int, int], ...]:
    return tok.choose_backend(name).divergent


def test_the_scan_finds_where_the_real_backends_unicode_tables_differ():
    installed("gigatoken")
    installed("fastokens")
    assert in_child(_divergent, "fastokens") == ((0x180E, 0x180E),)
    giga = in_child(_divergent, "gigatoken")
    assert (0x323B0, 0x33479) in giga  # CJK Extension J, new in Unicode 17
    assert all(a >= 0x80 for a, _ in giga)


def test_probing_a_backend_runs_no_rust_encoder_in_this_process():
    installed("gigatoken")
    choice = tok.probe_backend("auto")
    assert choice.name == "gigatoken" and choice.requested == "auto"
    assert "gigatoken.gigatoken_rs" not in sys.modules  # it ran in a child
    assert codepoints._memo[choice.verdict_key]["divergent"] == [list(r) for r in choice.divergent]


def _bounded_cache() -> tuple[int, bool, str]:
    import os

    ref = tok.reference_encoder()
    enc = GigatokenEncoder(str(tok.GPT2_RANKS_PATH), tok.EOT_ID, cache_limit_mb=4,
                           check_chars=100_000)
    rng = random.Random(1)
    same = True
    for _ in range(40):  # ~2 MB of distinct words: the per-word cache grows ~7 MB per MB
        text = " ".join("".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(4, 11)))
                        for _ in range(6000))
        same &= np.array_equal(enc.encode_document(text), ref.encode_document(text))
    return enc.rebuilds, same, os.environ.get("RAYON_NUM_THREADS", "")


def test_gigatokens_word_cache_is_bounded_by_rebuilding_it():
    installed("gigatoken")
    # a fresh interpreter: a forked child's allocator reuses its parent's freed (resident) heap,
    # so RSS, what the bound watches, would not grow with the cache
    rebuilds, same, threads = in_child(_bounded_cache, method="spawn")
    assert rebuilds >= 1 and same
    assert threads == "1"  # one thread per worker process, set before the import


# --------------------------------------------------------------------------- fakes


class WrongOn(Encoder):
    """tiktoken, but one id off on texts holding `marker`."""

    name = "fake"

    def __init__(self, marker: str) -> None:
        super().__init__(tok.EOT_ID, "1.0")
        self.marker = marker
        self.ref = tok.reference_encoder()

    def encode_ordinary(self, text: str) -> np.ndarray:
        ids = self.ref.encode_ordinary(text).copy()
        if self.marker in text and len(ids):
            ids[0] = (int(ids[0]) + 1) % 50000
        return ids


def fake_backends(monkeypatch, marker: str) -> None:
    """Only a fake backend (wrong on `marker`) is installed; its code point scan finds nothing
    (the real scan runs tiktoken's speed over 40 MB)."""
    fake = Backend("fake", "json", "fake>=1", lambda ranks, eot, pat: WrongOn(marker))
    monkeypatch.setattr("shards.encoders.FAST_BACKENDS", {"fake": fake})
    monkeypatch.setattr(tok, "FAST_BACKENDS", {"fake": fake})
    monkeypatch.setenv(codepoints.CACHE_ENV, "off")  # no verdict kept: each fake is checked
    monkeypatch.setattr(codepoints, "_memo", {})
    monkeypatch.setattr(codepoints, "divergent", lambda enc, ref, digests: [])


def test_auto_refuses_a_backend_with_a_wrong_id_on_one_conformance_text(fresh):
    fake_backends(fresh, "don't won't")  # only the "contractions" case holds it
    choice = tok.choose_backend("auto")
    assert (choice.name, choice.requested) == ("tiktoken", "auto")
    [warning] = choice.notes
    assert warning.startswith("warning: not using fake 1.0: ids differ from tiktoken's on "
                              "conformance text 'contractions' at token 0")
    assert "text \"don't won't" in warning and warning.endswith("; using tiktoken")
    assert "\n" not in warning
    assert tok.load_encoder("auto").name == "tiktoken"
    with pytest.raises(TokenizerError) as e:
        tok.load_encoder("fake")
    assert str(e.value).startswith("--tokenizer-backend fake refused: fake 1.0: ids differ")
    assert "\n" not in str(e.value)


def test_a_backend_right_on_the_corpus_is_taken_by_auto(fresh):
    fake_backends(fresh, "\x00never in the corpus\x00")
    assert tok.choose_backend("auto").label == "fake 1.0"


def test_a_missing_package_auto_uses_tiktoken_and_explicit_says_how_to_install(fresh):
    for name in ("gigatoken", "fastokens"):
        fresh.setitem(sys.modules, name, None)  # `import gigatoken` fails
    choice = tok.probe_backend("auto")
    assert choice.name == "tiktoken"
    assert choice.notes == ("no fast encoder installed, using tiktoken (pip install "
                            "'moe-shards[fast]' for a 3-10x faster one that writes the same ids)",)
    for name, req in (("gigatoken", "gigatoken>=0.10"), ("fastokens", "fastokens>=0.3.5")):
        with pytest.raises(TokenizerError) as e:
            tok.probe_backend(name)
        msg = str(e.value)
        assert msg.startswith(f"--tokenizer-backend {name}: the {name} package is not installed")
        assert f"pip install '{req}'" in msg and "\n" not in msg


def _crash(ranks, eot, pat):
    import os

    os._exit(3)  # a backend that brings its process down (a Rust panic that aborts)


def test_a_backend_that_crashes_its_check_is_not_used(fresh):
    crashing = Backend("crashy", "json", "crashy>=1", _crash)
    fresh.setattr(tok, "FAST_BACKENDS", {"crashy": crashing})
    fresh.setattr(tok, "BACKEND_CHOICES", ("auto", "tiktoken", "crashy"))
    choice = tok.probe_backend("auto")  # checked in a child: this process lives on
    assert choice.name == "tiktoken" and len(choice.notes) == 1
    assert choice.notes[0].startswith("warning: checking the fast encoders crashed the process")
    with pytest.raises(TokenizerError, match="^--tokenizer-backend crashy: checking it crashed"):
        tok.probe_backend("crashy")


def test_the_scan_finds_a_fakes_divergent_code_point_and_the_guard_routes_it():
    ref = tok.reference_encoder()
    fake = WrongOn("\u2603")
    digests = conformance.load_corpus().reference["block_digests"]
    found = codepoints.divergent(fake, ref, digests, blocks=[0x00, 0x26])
    assert found == [[0x2603, 0x2603]]
    guard = codepoints.Guard(found)
    assert guard.hits("let it \u2603 snow") and not guard.hits("h\u00e9llo \u2604")
    enc = codepoints.GuardedEncoder(fake, ref, guard)
    for text in ("snow \u2603 man", "plain ascii", "caf\u00e9"):
        assert np.array_equal(enc.encode_document(text), ref.encode_document(text))
    assert enc.routed == 1


# --------------------------------------------------------------------------- the corpus


def test_the_bundled_corpus_holds_every_case_and_tiktokens_digests():
    corpus = conformance.load_corpus()
    cases = dict(corpus.cases)
    for name, text in handwritten():
        assert cases[name] == text
    planes = {int(n.split()[2]) for n in cases if n.startswith("random plane")}
    assert planes == set(range(17))
    assert sum(n.startswith("real ") for n in cases) >= 10
    texts = dict(corpus.texts())
    line = texts[conformance.MULTI_MB_LINE]
    assert len(line.encode()) >= 3_000_000 and "\n" not in line
    ref = tok.reference_encoder()
    stored = corpus.reference["digests"]
    assert all(conformance.digest(ref.encode_document(t)) == stored[n] for n, t in texts.items())
    blocks = [0x00, 0x18, 0x30, 0x1F6, 0x323, 0x10FF]
    want = [corpus.reference["block_digests"][b] for b in blocks]
    assert codepoints.block_digests(ref, blocks) == want


# --------------------------------------------------------------------------- sampled check


def test_the_sampled_check_picks_one_in_n_by_content_and_names_a_wrong_document():
    import hashlib

    ref = tok.reference_encoder()
    fake = WrongOn("secret")
    check = SampledCheck(4, fake, lambda: ref, task="code.000003.L0")
    shas = [hashlib.sha256(str(i).encode()).digest() for i in range(4000)]
    picked = [s for s in shas if check.selects(s)]
    assert 800 < len(picked) < 1200  # 1 in 4
    assert [s for s in shas if SampledCheck(4, fake, lambda: ref).selects(s)] == picked
    for s in picked[:5]:
        check(s, "fine text", fake.encode_document("fine text"), {"file": "a.jsonl", "row": 1})
    assert check.checked == 5
    unpicked = next(s for s in shas if not check.selects(s))
    check(unpicked, "secret", fake.encode_document("secret"), {"file": "a.jsonl", "row": 2})
    with pytest.raises(EncoderMismatch) as e:
        check(picked[0], "a secret", fake.encode_document("a secret"),
              {"file": "a.jsonl", "row": 7})
    msg = str(e.value)
    assert msg.startswith("task code.000003.L0: the fake 1.0 encoder wrote ids that differ from "
                          "tiktoken's for the document at file a.jsonl, row 7 (sha256 "
                          f"{picked[0].hex()[:16]}")
    assert "nothing of it was written" in msg
    assert check.record() == {"backend": "fake", "version": "1.0", "check_every": 4,
                              "docs_checked": 6, "docs_by_tiktoken": 0}
    assert not SampledCheck(1, ref, lambda: ref).active  # tiktoken is the reference
    assert not SampledCheck(0, fake, lambda: ref).active
