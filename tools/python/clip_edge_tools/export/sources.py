"""Where an export's model comes from: an open_clip model (pretrained, or random
weights for architecture tests, optionally reduced for fixtures) or a Hugging
Face CLIP folder, reduced to a `Source` with everything an export needs."""

from __future__ import annotations

import dataclasses
import json
import pathlib
import tempfile

from ..errors import ExportError
from ..manifest import Preprocess


@dataclasses.dataclass
class Source:
    """A loaded model, whatever it came from, reduced to what an export needs."""
    name: str
    description: str
    model: object               # the torch module the two functions read
    image_fn: object            # torch: (N,3,S,S) float -> (N,D)
    text_fn: object             # torch: (N,ctx) int64 -> (N,D)
    transform: object           # PIL image -> (3,S,S) tensor, the model's own preprocessing
    preprocess: Preprocess
    tokenize: object            # list[str] -> (N,ctx) int64 tensor
    write_tokenizer: object     # path -> None (tokenizer.json)
    context_length: int
    pad_id: int
    logit_scale: float
    meta: dict



def reduce_config(cfg: dict) -> dict:
    """A small model of the same architecture, for tests: fewer and thinner layers."""
    cfg = json.loads(json.dumps(cfg))
    v, t = cfg["vision_cfg"], cfg["text_cfg"]
    cfg["embed_dim"] = 64
    if "timm_model_name" not in v:
        v.update(layers=2, width=64, head_width=32)
    t.update(layers=2, width=16, heads=2)
    return cfg


def shrink_timm_trunk(model, embed_dim: int) -> None:
    import timm

    trunk_name = model.visual.trunk.default_cfg.get("architecture", "")
    if not trunk_name.startswith("fastvit"):
        raise ExportError(f"--reduce does not know how to shrink the timm trunk {trunk_name!r}")
    model.visual.trunk = timm.create_model(trunk_name, num_classes=embed_dim, global_pool="avg",
                                           layers=(1, 1, 1, 1), embed_dims=(16, 32, 64, 128))


def build_open_clip(name: str, pretrained: str | None, reduce: bool):
    import open_clip
    import torch

    if name not in open_clip.list_models():
        close = [m for m in open_clip.list_models() if name.lower().split("-")[0] in m.lower()][:8]
        raise ExportError(f"unknown open_clip model {name!r}" + (f" (similar: {', '.join(close)})" if close else ""))
    torch.manual_seed(0)
    kwargs = {}
    if reduce:
        cfg = reduce_config(open_clip.get_model_config(name))
        kwargs = {"embed_dim": cfg["embed_dim"], "vision_cfg": cfg["vision_cfg"], "text_cfg": cfg["text_cfg"]}
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained, **kwargs)
    except RuntimeError as e:
        raise ExportError(f"cannot create {name} with pretrained={pretrained!r}: {e}") from e
    if reduce and hasattr(model.visual, "trunk"):
        shrink_timm_trunk(model, kwargs["embed_dim"])
    model.eval()
    try:
        from timm.utils import reparameterize_model

        model = reparameterize_model(model)
    except ImportError:
        pass
    tokenizer = open_clip.get_tokenizer(name)
    return model, preprocess, tokenizer


def preprocess_from_transform(transform) -> Preprocess:
    from torchvision import transforms as T

    steps = list(transform.transforms)
    resize = next(s for s in steps if isinstance(s, T.Resize))
    crop = next((s for s in steps if isinstance(s, T.CenterCrop)), None)
    norm = next(s for s in steps if isinstance(s, T.Normalize))
    interp = {"bicubic": "bicubic", "bilinear": "bilinear", "nearest": "nearest"}.get(resize.interpolation.value)
    if interp is None:
        raise ExportError(f"interpolation {resize.interpolation} is not supported by clip-edge")
    if isinstance(resize.size, int) or (isinstance(resize.size, (list, tuple)) and len(resize.size) == 1):
        size = resize.size if isinstance(resize.size, int) else resize.size[0]
        if crop is None:
            raise ExportError("Resize without CenterCrop is not supported")
        mode = "shortest-center-crop"
    else:
        h, w = resize.size
        if h != w:
            raise ExportError(f"non-square input {h}x{w} is not supported")
        size, mode = h, "squash"
    return Preprocess(size=int(size), resize=mode, interpolation=interp,
                      mean=tuple(float(v) for v in norm.mean), std=tuple(float(v) for v in norm.std))


def save_tokenizer(tokenizer, dst: pathlib.Path) -> tuple[int, bool]:
    """Writes tokenizer.json; returns (pad id, whether the text graph takes a mask)."""
    import open_clip

    if isinstance(tokenizer, open_clip.tokenizer.SimpleTokenizer):
        from .. import tokenizer as clip_tokenizer

        clip_tokenizer.build().save(str(dst))
        return 0, False
    hf = getattr(tokenizer, "tokenizer", None)
    if hf is not None and hasattr(hf, "backend_tokenizer"):
        hf.backend_tokenizer.save(str(dst))
        return int(hf.pad_token_id or 0), False
    raise ExportError(f"tokenizer {type(tokenizer).__name__} cannot be converted to tokenizer.json")



def open_clip_source(args) -> Source:
    """`export_bundle.py open-clip`: --model, --pretrained or --random-init, --reduce, --name."""
    if not args.random_init and not args.pretrained:
        raise ExportError("give --pretrained TAG (or a checkpoint path), or --random-init")
    if args.out.exists() and not args.force:
        raise ExportError(f"{args.out}: already exists (use --force to replace it)")
    model, transform, tokenizer = build_open_clip(args.model, None if args.random_init else args.pretrained,
                                                  args.reduce)
    pre = preprocess_from_transform(transform)
    ctx = int(getattr(tokenizer, "context_length", 77) or 77)
    holder = {}

    def write_tok(path):
        holder["pad"], _ = save_tokenizer(tokenizer, path)

    write_tok(pathlib.Path(tempfile.mkdtemp()) / "probe.json")
    weights = "random" if args.random_init else args.pretrained
    src = Source(
        name=f"{args.model}{'-reduced' if args.reduce else ''}-{weights}",
        description=(f"open_clip {args.model} " + ("(reduced depth/width) " if args.reduce else "")
                     + ("with RANDOM weights (architecture test, not a trained model)" if args.random_init
                        else f"pretrained={args.pretrained}")),
        model=model, image_fn=model.encode_image, text_fn=model.encode_text, transform=transform, preprocess=pre,
        tokenize=lambda texts: tokenizer(texts), write_tokenizer=write_tok, context_length=ctx,
        pad_id=holder["pad"], logit_scale=float(model.logit_scale.exp().detach()),
        meta={"open_clip": args.model, "pretrained": None if args.random_init else args.pretrained,
              "reduced": args.reduce},
    )
    return src



def hf_source(args) -> Source:
    """`export_bundle.py hf`: --folder, --name."""
    folder = pathlib.Path(args.folder)
    if not folder.is_dir():
        raise ExportError(f"{folder}: no such folder")
    if not (folder / "config.json").is_file():
        raise ExportError(f"{folder}: no config.json (not a Hugging Face model folder)")
    if not any((folder / f).is_file() for f in ("model.safetensors", "pytorch_model.bin")):
        raise ExportError(f"{folder}: no weights (model.safetensors or pytorch_model.bin)")
    if args.out.exists() and not args.force:
        raise ExportError(f"{args.out}: already exists (use --force to replace it)")
    try:
        from transformers import CLIPModel, CLIPTokenizerFast
    except ImportError as e:
        raise ExportError("the hf source needs transformers (pip install transformers)") from e
    from torchvision import transforms as T

    config = json.loads((folder / "config.json").read_text())
    if config.get("model_type") != "clip":
        raise ExportError(f"{folder}: model_type {config.get('model_type')!r} is not 'clip'")
    model = CLIPModel.from_pretrained(str(folder)).eval()
    pp_path = folder / "preprocessor_config.json"
    pp = json.loads(pp_path.read_text()) if pp_path.is_file() else {}
    size = pp.get("size", {"shortest_edge": model.config.vision_config.image_size})
    size = size.get("shortest_edge", size.get("height")) if isinstance(size, dict) else size
    crop = pp.get("crop_size", size)
    crop = crop.get("height", crop.get("shortest_edge")) if isinstance(crop, dict) else crop
    if int(size) != int(crop):
        raise ExportError(f"{pp_path}: resize to {size} then crop to {crop} is not supported (bundles resize the "
                          "shortest side to the crop size)")
    interp = {0: "nearest", 2: "bilinear", 3: "bicubic"}.get(pp.get("resample", 3))
    if interp is None:
        raise ExportError(f"{pp_path}: resample {pp.get('resample')} is not supported")
    pre = Preprocess(size=int(crop), resize="shortest-center-crop", interpolation=interp,
                     mean=tuple(pp.get("image_mean", (0.48145466, 0.4578275, 0.40821073))),
                     std=tuple(pp.get("image_std", (0.26862954, 0.26130258, 0.27577711))))
    mode = {"nearest": T.InterpolationMode.NEAREST, "bilinear": T.InterpolationMode.BILINEAR,
            "bicubic": T.InterpolationMode.BICUBIC}[interp]
    transform = T.Compose([T.Resize(pre.size, interpolation=mode), T.CenterCrop(pre.size), T.ToTensor(),
                           T.Normalize(pre.mean, pre.std)])
    try:
        hf_tok = CLIPTokenizerFast.from_pretrained(str(folder))
    except Exception as e:
        raise ExportError(f"{folder}: no usable tokenizer (tokenizer.json or vocab.json + merges.txt): {e}") from e
    ctx = int(model.config.text_config.max_position_embeddings)

    def tokenize(texts):
        import torch

        enc = hf_tok(texts, padding="max_length", max_length=ctx, truncation=True, return_tensors="pt")
        return enc["input_ids"].to(torch.long)

    src = Source(
        name=args.name or folder.name, description=f"Hugging Face CLIP folder {folder.name}",
        model=model, image_fn=lambda x: model.get_image_features(pixel_values=x).pooler_output,
        text_fn=lambda t: model.get_text_features(input_ids=t).pooler_output,
        transform=transform, preprocess=pre, tokenize=tokenize,
        write_tokenizer=lambda path: hf_tok.backend_tokenizer.save(str(path)), context_length=ctx,
        pad_id=int(hf_tok.pad_token_id or 0), logit_scale=float(model.logit_scale.exp().detach()),
        meta={"huggingface_folder": str(folder)},
    )
    return src

