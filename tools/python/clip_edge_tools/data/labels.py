"""Labels files (the TOML `clip-edge prompts build` reads, docs/prompts.md) for
sets of emoji concepts, under the evaluation templates."""

from __future__ import annotations

import json

from .emoji import NAME_TEMPLATES

EVAL_TEMPLATES = list(dict.fromkeys(NAME_TEMPLATES))


def labels_toml(concepts: list[dict], keywords: bool) -> str:
    """Classes named by their names under the templates; with `keywords`, the
    concept's keyword captions are added as descriptions (still text only)."""
    lines = [f"templates = {json.dumps(EVAL_TEMPLATES)}", ""]
    for c in concepts:
        lines += ["[[class]]", f"name = {json.dumps(c['name'])}"]
        if keywords and c["keywords"]:
            kw = c["keywords"]
            descriptions = [f"{c['name']}: {', '.join(kw[:6])}", ", ".join(kw[:4])]
            lines.append(f"descriptions = {json.dumps(descriptions)}")
        lines.append("")
    return "\n".join(lines)
