"""The tokenizer bridge (clip_edge_tools.tokenizer): CLIP's BPE as tokenizer.json,
as the Rust side reads it (tests/tests/text.rs), against open_clip's token ids
in tests/data/vit_tiny/tokenizer_reference.json."""

from __future__ import annotations

import json

import pytest

tokenizers = pytest.importorskip("tokenizers", reason="needs the tokenizers package (tools/python/setup_venv.sh)")

from clip_edge_tools import tokenizer  # noqa: E402


@pytest.fixture(scope="module")
def reference(test_data_dir):
    return json.loads((test_data_dir / "vit_tiny" / "tokenizer_reference.json").read_text())


@pytest.fixture(scope="module")
def committed(test_data_dir):
    return tokenizer.load(test_data_dir / "vit_tiny" / "tokenizer.json")


def test_committed_tokenizer_gives_open_clip_s_ids(reference, committed):
    assert reference["context_length"] == tokenizer.CONTEXT_LENGTH
    assert (reference["sot"], reference["eot"]) == (tokenizer.SOT_ID, tokenizer.EOT_ID)
    assert len(reference["cases"]) >= 300
    wrong = [(c["text"], tokenizer.encode(committed, c["text"]), c["ids"]) for c in reference["cases"]
             if tokenizer.encode(committed, c["text"]) != c["ids"]]
    assert not wrong, wrong[:3]


def test_known_differences_are_still_the_same(reference, committed):
    assert 0 < len(reference["known_differences"]) <= 10
    for d in reference["known_differences"]:
        assert tokenizer.encode(committed, d["text"]) == d["tokenizer_json"], d["text"]
        assert d["why"] != "unexplained"


def test_truncation_keeps_the_context_and_ends_with_end_of_text(committed):
    ids = tokenizer.encode(committed, "word " * 200)
    assert len(ids) == tokenizer.CONTEXT_LENGTH
    assert ids[0] == tokenizer.SOT_ID and ids[-1] == tokenizer.EOT_ID
    short = tokenizer.encode(committed, "a photo of a cat.")
    assert short[0] == tokenizer.SOT_ID and short[-1] == tokenizer.EOT_ID and len(short) < 10
    assert tokenizer.truncate([1, 2, 3, 4], 3) == [1, 2, tokenizer.EOT_ID]
    assert tokenizer.truncate([1, 2, 3], 3) == [1, 2, 3]


def test_prompt_tokens_of_the_fixture_reference(test_data_dir, committed):
    """reference.json holds open_clip's padded ids of the fixture's prompts."""
    prompts = json.loads((test_data_dir / "vit_tiny" / "reference.json").read_text())["prompts"]
    for p in prompts:
        ids = tokenizer.encode(committed, p["text"])
        assert ids + [0] * (tokenizer.CONTEXT_LENGTH - len(ids)) == p["tokens"], p["text"]


def test_built_from_open_clip_s_vocabulary_it_is_the_committed_tokenizer(committed):
    pytest.importorskip("torch", reason="building from open_clip's BPE file needs torch and open_clip "
                                        "(tools/python/setup_venv.sh)")
    pytest.importorskip("open_clip", reason="needs open_clip (tools/python/setup_venv.sh)")
    built = tokenizer.build()
    assert built.get_vocab() == committed.get_vocab()
    texts = tokenizer.corpus()
    assert len(texts) >= 300
    assert [tokenizer.encode(built, t) for t in texts] == [tokenizer.encode(committed, t) for t in texts]


def test_open_clip_agrees_on_the_reference_cases(reference, committed):
    pytest.importorskip("torch", reason="open_clip's tokenizer needs torch (tools/python/setup_venv.sh)")
    open_clip = pytest.importorskip("open_clip", reason="needs open_clip (tools/python/setup_venv.sh)")
    simple = open_clip.tokenizer.SimpleTokenizer()
    for case in reference["cases"][::25]:
        want = simple([case["text"]], context_length=tokenizer.CONTEXT_LENGTH)[0].tolist()
        assert want[:len(case["ids"])] == case["ids"] and not any(want[len(case["ids"]):]), case["text"]
