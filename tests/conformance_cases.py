"""The source of the bundled conformance corpus, ``shards/assets/conformance.json.gz``.

``python tests/conformance_cases.py`` rebuilds it: the handwritten cases below, seeded random
code points from every Unicode plane, and real text (a fixed list of the running Python's
standard-library files, PSF licence), with tiktoken's reference digest of every case (and of
the multi-MB line `shards.conformance` builds from the real code). The bundle, not this file, is
what a worker checks a backend against; `tests/test_conformance.py` checks that the bundle holds
every case below and that its digests are tiktoken's.
"""

from __future__ import annotations

import gzip
import json
import random
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEED = 20261204
# Unicode White_Space, and look-alikes that are not (ZWSP, word joiner, BOM, Mongolian vowel sep.)
WHITESPACE = ["\t", "\n", "\x0b", "\x0c", "\r", " ", "\x85", "\xa0", "\u1680", "\u2000",
              "\u2001", "\u2002", "\u2003", "\u2004", "\u2005", "\u2006", "\u2007", "\u2008",
              "\u2009", "\u200a", "\u2028", "\u2029", "\u202f", "\u205f", "\u3000"]
NOT_WHITESPACE = ["\u180e", "\u200b", "\u2060", "\ufeff", "\u200c", "\u200d"]
REAL_FILES = ["textwrap.py", "heapq.py", "bisect.py", "json/decoder.py", "csv.py", "string.py",
              "fractions.py", "colorsys.py", "shlex.py", "idlelib/README.txt",
              "idlelib/HISTORY.txt", "pydoc_data/topics.py"]
REAL_MAX_CHARS = 60_000  # per file (topics.py is ~700 KB of prose)


def handwritten() -> list[tuple[str, str]]:
    cases: list[tuple[str, str]] = []

    def add(name: str, text: str) -> None:
        cases.append((name, text))

    # whitespace runs: every White_Space character alone, doubled, before a letter/digit/mark,
    # after a word, at the end, mixed with spaces (GPT-2's `\s+(?!\S)|\s+` pieces)
    for ws in WHITESPACE + NOT_WHITESPACE:
        cp = f"U+{ord(ws):04X}"
        add(f"ws {cp} runs", f"{ws}{ws}b a{ws}b a{ws}{ws}b a {ws}b a{ws} b {ws}{ws}{ws}1 "
                            f"x{ws}\n{ws}y{ws}.{ws}{ws}é{ws}{ws}")
        add(f"ws {cp} alone", ws)
        add(f"ws {cp} end", f"word{ws}{ws}")
    add("nbsp issue case", "\xa0\xa0b")
    add("ws mixed", " \xa0 \u3000\t\n \u2003x  \n\n\t  y \r\n\r\n   z   ")
    add("ws only", "     \n\n\t\t   ")
    add("empty", "")
    add("one space", " ")
    add("newline", "\n")
    add("crlf", "line one\r\nline two\r\n\r\n  indented\r\n")
    # CJK, Korean, Thai (no spaces), RTL scripts with marks
    add("chinese", "机器学习是人工智能的一个分支。它使用统计方法，使计算机能够从数据中“学习”。")
    add("japanese", "日本語の文章です。　ひらがな、カタカナ、漢字を含みます！ＡＢＣ１２３")
    add("korean", "한국어 문장입니다. 기계 학습은 인공지능의 한 분야입니다.")
    add("korean jamo", "\u1100\u1161\u11a8 \u1112\u1161\u11ab")
    add("thai", "ภาษาไทยไม่มีการเว้นวรรคระหว่างคำ")
    add("arabic", "\u200fمرحبا بالعالم ١٢٣ \u200eabc\u200f")
    add("hebrew niqqud", "שָׁלוֹם עוֹלָם")
    add("devanagari", "हिन्दी में लिखा गया वाक्य। १२३४")
    add("cjk ext b", "𠀀𠀁𪜀 𠮷野家")
    # emoji: skin tones, ZWJ sequences, flags, keycaps, variation selectors, tag sequences
    add("emoji skin tones", "👍🏻👍🏼👍🏽👍🏾👍🏿 ok 👋🏽hi")
    add("emoji zwj", "👨‍👩‍👧‍👦 family 🧑🏿‍🚀 astronaut 🏳️‍🌈 flag 👩‍❤️‍💋‍👨")
    add("emoji flags keycaps", "🇯🇵🇺🇸🇩🇪 1️⃣2️⃣#️⃣ ❤️❤ ☺️ 🏴󠁧󠁢󠁳󠁣󠁴󠁿")
    add("emoji run", "😀" * 300 + " " + "🎉🎊" * 100)
    # combining marks, Zalgo, normalization forms, ligatures, fullwidth, math alphanumerics
    add("combining", "e\u0301 cafe\u0301 n\u0303o a\u0308\u0304 \u0301start")
    add("zalgo", "Z" + "\u0300\u0301\u0302\u0303\u0304\u0305\u0306\u0307" * 12 + "algơ̸̢̺͓")
    add("nfc nfd", "café café Å Å ﬁ ﬀ ŉ")
    add("fullwidth", "ＦＵＬＬ　ｗｉｄｔｈ！？　１２３")
    add("math alnum", "𝐀𝐁𝐂 𝑥² + 𝑦² = 𝑧² ∑ᵢ xᵢ ∀ε>0 ∃δ")
    add("letterlike numbers", "Ⅻ ⅻ ½ ¾ ² ³ ① ⑳ ٣٤٥ १२३ 𝟙𝟚𝟛 ৩")
    # digits: runs, grouped, decimals, signs, mixed with letters
    add("digit runs", "1234567890" * 30 + " 0 00 000 0000 12345 123456 1234567")
    add("numbers", "1,234,567.89 -42 +3.14e-10 0x1F 0b1010 1_000_000 3rd 2nd 10am v1.2.3")
    add("digits letters", "abc123def456 123abc 1a2b3c 2023-12-04T15:30:00Z")
    # contractions: GPT-2's pattern is case-sensitive and ASCII-apostrophe only
    add("contractions", "don't won't it's I'm you're we've they'll she'd 's 't 're 've 'm "
                        "'ll 'd")
    add("contractions upper", "DON'T IT'S I'M YOU'RE WE'VE THEY'LL SHE'D 'S 'T 'RE")
    add("contractions odd", "’s it’s ''s ' s '''' 'sss 'llama 'd' 'dd rock'n'roll o'clock")
    # the special token's text, and its near misses: always ordinary text in a document
    add("eot alone", "<|endoftext|>")
    add("eot inside", "before<|endoftext|>after <|endoftext|> x<|endoftext|><|endoftext|>")
    add("eot near", "<|endoftext| <|endoftext|  |endoftext|> <|fim_prefix|> <|im_start|>")
    # control characters, private use, noncharacters, the last code point
    add("controls", "".join(chr(c) for c in range(0, 32)) + "\x7f" +
        "".join(chr(c) for c in range(0x80, 0xa0)))
    add("private use", "\ue000\uf8ff \U000f0000\U000ffffd \U00100000\U0010fffd")
    add("noncharacters", "\ufdd0\ufdef\ufffe\uffff \U0001fffe\U0001ffff \U0010fffe\U0010ffff")
    # long runs of one kind (long BPE pieces)
    for ch, n in (("a", 10000), (" ", 5000), ("1", 3000), ("\n", 3000), ("!", 3000),
                  ("é", 2000), ("日", 3000), ("\xa0", 2000), ("-", 4000), ("ab", 3000)):
        add(f"run {ch!r} x{n}", ch * n)
    add("long word", "Pneumonoultramicroscopicsilicovolcanoconiosis" * 50)
    # code-ish and markup
    add("code python", "def f(x):\n    return x**2  # square\n\n\nclass A:\n\tpass\n")
    add("code c", "int main(void) {\n\tprintf(\"%d\\n\", a[i]++);\n\treturn 0;\n}\n")
    add("code js", "const f = async (a, b) => { await x?.y ?? z; return `${a}${b}`; };")
    add("html", "<div class=\"x\">&nbsp;&amp;<br/>\n  <a href='/p?q=1&r=2'>link</a></div>")
    add("json", '{"a": [1, 2.5, null, true], "b": {"c": "d\\u00e9\\n"}}')
    add("url email", "https://example.com/a/b?c=d#e mailto:someone@example.org")
    add("punct runs", "...!!!???---___***///\\\\\\|||~~~```'''\"\"\" .. ,, ;; ::")
    add("mixed scripts", "Hello世界мир🌍 Ελληνικά עברית العربية हिन्दी 한국어 ไทย")
    return cases


def random_planes(seed: int = SEED) -> list[tuple[str, str]]:
    """Seeded random code points from each of the 17 planes (no surrogates), some runs joined
    by spaces, newlines, ASCII letters, digits and punctuation."""
    rng = random.Random(seed)
    glue = [" ", "  ", "\n", "\t", "a", "Z", "7", "42", ".", ",", "'s", "\xa0", "-"]
    out = []
    for plane in range(17):
        lo, hi = plane << 16, (plane << 16) + 0xFFFF
        for k in range(4):
            parts = []
            for _ in range(rng.randint(40, 120)):
                run = []
                for _ in range(rng.randint(1, 6)):
                    cp = rng.randint(lo, hi)
                    if 0xD800 <= cp <= 0xDFFF:
                        cp = rng.randint(0x4E00, 0x9FFF)
                    run.append(chr(cp))
                parts.append("".join(run))
                parts.append(rng.choice(glue))
            out.append((f"random plane {plane} #{k}", "".join(parts)))
    return out


def real_text() -> list[tuple[str, str]]:
    root = Path(sysconfig.get_paths()["stdlib"])
    out = []
    for rel in REAL_FILES:
        text = (root / rel).read_text(encoding="utf-8")[:REAL_MAX_CHARS]
        out.append((f"real {rel}", text))
    return out


def build(path: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from importlib.metadata import version

    from shards import codepoints, conformance
    from shards.tokenizer import GPT2_RANKS_SHA256, reference_encoder

    cases = handwritten() + random_planes() + real_text()
    names = [n for n, _ in cases]
    assert len(set(names)) == len(names), "case names must be unique"
    enc = reference_encoder()
    corpus = conformance.Corpus(cases=cases, reference={})
    digests = {name: conformance.digest(enc.encode_document(text))
               for name, text in corpus.texts()}
    data = {"format": conformance.CORPUS_FORMAT, "cases": [list(c) for c in cases],
            "reference": {"encoder": f"tiktoken {version('tiktoken')}",
                          "ranks_sha256": GPT2_RANKS_SHA256, "digests": digests,
                          "probe": codepoints.PROBE_VERSION,
                          "block_digests": codepoints.block_digests(enc)}}
    raw = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    path.write_bytes(gzip.compress(raw, compresslevel=9, mtime=0))
    print(f"{path}: {len(cases)} cases, {len(raw) / 1e6:.2f} MB of JSON, "
          f"{path.stat().st_size / 1e3:.0f} KB gzipped")


if __name__ == "__main__":
    build(ROOT / "shards" / "assets" / "conformance.json.gz")
