"""CLIP's BPE tokenizer as a Hugging Face `tokenizer.json` for the Rust `tokenizers` crate.

open_clip ships the BPE vocabulary (`bpe_simple_vocab_16e6.txt.gz`) and
tokenizes in Python (`open_clip.tokenizer.SimpleTokenizer`). This module
rebuilds the same tokenizer with the `tokenizers` library:

- normaliser: NFC, runs of whitespace -> one space, strip, lowercase
  (open_clip: ftfy.fix_text + double html.unescape + whitespace clean + lower);
- pre-tokeniser: CLIP's split regex (special tokens, 's 't 're 've 'm 'll 'd,
  letter runs, single digits, runs of other non-space characters), then
  GPT-2 byte-to-unicode mapping without its own regex;
- model: BPE with the `</w>` end-of-word suffix and open_clip's merge ranks;
- post-processor: `<start_of_text>` (49406) ... `<end_of_text>` (49407).

Truncation to the context length (77) is done by the caller, as open_clip
does: keep the first 77 ids and set the last to `<end_of_text>`.

Known differences, by construction: open_clip runs `ftfy.fix_text` (repairs
mojibake, curly quotes stay, some compatibility characters change) and
unescapes HTML entities twice (`&amp;` -> `&`); tokenizer.json does neither.

Run as a script to write `tokenizer.json` and the reference token ids that the
Rust test compares against:
    .venv/bin/python tools/python/clip_tokenizer.py --out tests/data/vit_tiny
"""

from __future__ import annotations

import argparse
import gzip
import json
import pathlib
import random

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

SOT, EOT = "<start_of_text>", "<end_of_text>"
SOT_ID, EOT_ID = 49406, 49407
CONTEXT_LENGTH = 77
SPLIT = r"""<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def default_bpe_path() -> pathlib.Path:
    import open_clip.tokenizer

    return pathlib.Path(open_clip.tokenizer.default_bpe())


def build(bpe_path: pathlib.Path | None = None) -> Tokenizer:
    """The CLIP tokenizer from open_clip's BPE merges file."""
    bpe_path = bpe_path or default_bpe_path()
    with gzip.open(bpe_path) as f:
        lines = f.read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]
    vocab_list = list(bytes_to_unicode().values())
    vocab_list = vocab_list + [v + "</w>" for v in vocab_list]
    vocab_list += ["".join(m) for m in merges]
    vocab_list += [SOT, EOT]
    vocab = {tok: i for i, tok in enumerate(vocab_list)}
    assert vocab[SOT] == SOT_ID and vocab[EOT] == EOT_ID

    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, end_of_word_suffix="</w>", unk_token=None,
                               continuing_subword_prefix="", fuse_unk=False))
    tok.normalizer = normalizers.Sequence([
        normalizers.NFC(),
        normalizers.Replace(Regex(r"\s+"), " "),
        normalizers.Strip(),
        normalizers.Lowercase(),
    ])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{SOT} $A {EOT}", special_tokens=[(SOT, SOT_ID), (EOT, EOT_ID)])
    tok.decoder = decoders.Sequence([decoders.ByteLevel(), decoders.Replace("</w>", " ")])
    tok.add_special_tokens([AddedToken(SOT, normalized=False, special=True),
                            AddedToken(EOT, normalized=False, special=True)])
    return tok


def truncate(ids: list[int], context_length: int = CONTEXT_LENGTH) -> list[int]:
    """open_clip's truncation: first `context_length` ids, the last one forced to end-of-text."""
    if len(ids) > context_length:
        ids = ids[:context_length]
        ids[-1] = EOT_ID
    return ids


def load(path: pathlib.Path) -> Tokenizer:
    """A tokenizer.json (as written by `build().save(...)`)."""
    return Tokenizer.from_file(str(path))


def encode(tok: Tokenizer, text: str, context_length: int = CONTEXT_LENGTH) -> list[int]:
    """Token ids as open_clip makes them, without the padding: start, BPE ids,
    end, truncated to `context_length` with the last id forced to end-of-text."""
    return truncate(tok.encode(text).ids, context_length)


def corpus(seed: int = 7) -> list[str]:
    """A few hundred varied strings: prompts, punctuation, digits, accents, emoji, long text."""
    rng = random.Random(seed)
    words = ("cat dog car bicycle person bird package truck tree house red green blue small big fluffy "
             "orange photo picture drawing empty room plain wall night rain street kitchen a an the of on in "
             "with sitting running jumping delivery van broken part smiling face heart").split()
    templates = ["a photo of a {}.", "a blurry photo of a {}.", "a black and white photo of the {}.",
                 "a low resolution photo of a {}.", "itap of a {}.", "a close-up photo of the {}.",
                 "art of the {}.", "a origami {}.", "a {} in a video game.", "a sculpture of the {}."]
    out = [t.format(w) for t in templates for w in words[:12]]
    extras = [
        "", " ", "a", "A", "CAT", "Hello, World!", "don't", "it's", "we're", "they've", "I'm", "you'll", "he'd",
        "DON'T STOP", "rock'n'roll", "e-mail", "state-of-the-art", "3.14159", "1234567890", "no. 42",
        "20°C", "50%", "$100", "#hashtag", "@user", "a+b=c", "x*y/z", "(parens) [brackets] {braces}",
        "ellipsis...", "?!?!", "tab\there", "new\nline", "  many   spaces  ", "trailing space ",
        "café", "naïve", "Ærøskøbing", "São Paulo", "Zürich", "Ελληνικά", "русский текст", "日本語のテキスト",
        "中文", "한국어", "עברית", "العربية", "हिन्दी", "ﬁancé",
        "🙂", "😀 grinning face", "🐶🐱", "👍🏽", "❤️", "🇫🇷 flag", "👨‍👩‍👧 family",
        "e\u0301", "Cafe\u0301", "\u00a0nbsp", "zero\u200bwidth",
        "<start_of_text>", "a <end_of_text> b", "<unknown>",
        "&amp;", "fish &amp; chips", "&lt;b&gt;", "Ã©", "“smart quotes”", "‘single’",
    ]
    out += extras
    for _ in range(120):
        n = rng.randint(1, 12)
        s = " ".join(rng.choice(words) for _ in range(n))
        if rng.random() < 0.3:
            s = s.capitalize() + rng.choice([".", "!", "?", ",", ";", ":", "..."])
        if rng.random() < 0.2:
            s += " " + str(rng.randint(0, 99999))
        out.append(s)
    long_text = " ".join(rng.choice(words) for _ in range(150))
    out += [long_text, long_text.upper(), "word " * 80, "supercalifragilisticexpialidocious " * 10]
    return out


def why(text: str) -> str:
    """Which open_clip clean-up step tokenizer.json does not reproduce for `text`."""
    import html

    import ftfy

    if html.unescape(html.unescape(text)) != text:
        return "open_clip unescapes HTML entities"
    if ftfy.fix_text(text) != text:
        return f"ftfy.fix_text rewrites the text to {ftfy.fix_text(text)!r}"
    return "unexplained"


def main() -> None:
    """`clip_tokenizer.py --out DIR`: tokenizer.json and tokenizer_reference.json."""
    import open_clip

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=pathlib.Path, required=True,
                        help="folder for tokenizer.json and tokenizer_reference.json")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    tok = build()
    tok.save(str(args.out / "tokenizer.json"))
    reloaded = load(args.out / "tokenizer.json")
    reference = open_clip.tokenizer.SimpleTokenizer()

    cases, differences = [], []
    for text in corpus():
        want = reference([text], context_length=CONTEXT_LENGTH)[0].tolist()
        last_eot = len(want) - 1 - want[::-1].index(EOT_ID)
        want = want[: last_eot + 1]
        got = encode(reloaded, text)
        if got == want:
            cases.append({"text": text, "ids": got})
        else:
            differences.append({"text": text, "open_clip": want, "tokenizer_json": got, "why": why(text)})
    data = {
        "generator": "tools/python/clip_tokenizer.py",
        "open_clip": open_clip.__version__,
        "context_length": CONTEXT_LENGTH,
        "sot": SOT_ID,
        "eot": EOT_ID,
        "cases": cases,
        "known_differences": differences,
    }
    (args.out / "tokenizer_reference.json").write_text(json.dumps(data, ensure_ascii=False, indent=0) + "\n")
    print(f"{len(cases)} strings identical to open_clip, {len(differences)} known differences:")
    for d in differences:
        print(f"  {d['text']!r}: {d['why']}")
    if any(d["why"] == "unexplained" for d in differences):
        raise SystemExit("tokenizer.json differs from open_clip where no known clean-up step explains it")


if __name__ == "__main__":
    main()
