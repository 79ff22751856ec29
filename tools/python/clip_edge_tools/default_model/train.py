"""Train clip-edge's default model: a small image CNN trained from scratch
against the frozen MiniLM-L6 sentence encoder, on camera-like frames made
from openly licensed emoji (Noto and Twemoji), with CLIP's symmetric
contrastive loss and a learned temperature.

  tools/python/fetch_data.sh                     # npm data into .cache/emoji
  .venv/bin/python tools/python/train_default.py --out .cache/runs/default
  .venv/bin/python tools/python/train_default.py --package .cache/runs/default --bundle models/emoji --force

Training is seeded; its log (loss, temperature, a held-out check every few
hundred steps) goes to OUT/train_log.jsonl. A held-out 10% of concepts
(data/emoji.py, heldout_split) is never seen in any style; OpenMoji images are
never used here (they are the unseen-style test set).

--package exports the trained towers to ONNX (image f32 plus an int8 and an
f16-storage form; the MiniLM text tower as int8), checks them in ONNX
Runtime and tract, and writes the bundle with export_bundle's writer
(default_model/package.py).
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import random
import sys
import time

import numpy as np

from ..data import emoji as emoji_data
from ..errors import DataMissing, exit_code
from ..log import logger
from ..paths import EMOJI_BUNDLE

log = logger("train")


def text_bank(concepts: list[dict], cache: pathlib.Path):
    """Caption embeddings for every concept (cached by caption list)."""
    import hashlib

    import torch

    from . import towers as dm

    texts, owner = [], []
    for i, c in enumerate(concepts):
        for t in emoji_data.caption_texts(c):
            texts.append(t)
            owner.append(i)
    key = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    path = cache / f"text_bank_{key}.npy"
    if path.is_file():
        emb = torch.from_numpy(np.load(path))
    else:
        from tqdm import tqdm

        tower, tok, _ = dm.load_text_tower()
        bar = tqdm(total=len(texts), desc="embedding captions (MiniLM)", unit="text")
        last = [0]

        def progress(done):
            bar.update(done - last[0])
            last[0] = done

        emb = dm.embed_texts(tower, tok, texts, progress=progress)
        bar.close()
        cache.mkdir(parents=True, exist_ok=True)
        np.save(path, emb.numpy())
    return emb, torch.tensor(owner)


def class_text(concepts: list[dict], cache: pathlib.Path):
    """Per-concept class embedding as the prompt builder makes it with the
    default templates: the mean of the normalised name under NAME_TEMPLATES,
    normalised (cached by name list)."""
    import hashlib

    import torch
    import torch.nn.functional as F

    from . import towers as dm

    texts = [t.format(c["name"]) for c in concepts for t in emoji_data.NAME_TEMPLATES]
    key = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    path = cache / f"class_text_{key}.npy"
    if path.is_file():
        return torch.from_numpy(np.load(path))
    tower, tok, _ = dm.load_text_tower()
    emb = dm.embed_texts(tower, tok, texts).view(len(concepts), len(emoji_data.NAME_TEMPLATES), -1)
    rows = F.normalize(emb.mean(1), dim=-1)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, rows.numpy())
    return rows


def use_bf16(choice: str) -> bool:
    """bf16 autocast where the CPU computes bf16 natively (AVX512-BF16 or AMX):
    about twice as fast here; elsewhere it would be emulated, so f32."""
    if choice != "auto":
        return choice == "bf16"
    import torch

    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def check(net, mean, std, held_frames, all_text, held_rows, seen_frames, seen_rows) -> dict:
    """The training log's accuracy check: held-out frames among the held-out
    and among all concepts, seen frames among all (one fixed augmentation draw)."""
    import torch
    import torch.nn.functional as F

    def embed(frames):
        return F.normalize(net(((frames - mean) / std).contiguous(memory_format=torch.channels_last)), dim=-1)

    def hits(sims, truth, k):
        return round((sims.topk(k, dim=1).indices == truth[:, None]).any(1).float().mean().item(), 4)

    net.eval()
    with torch.no_grad():
        held = embed(held_frames)
        seen = embed(seen_frames)
    net.train()
    local = torch.arange(len(held_rows))
    return {"heldout_top1": hits(held @ all_text[held_rows].T, local, 1),
            "heldout_top5": hits(held @ all_text[held_rows].T, local, 5),
            "heldout_all_top5": hits(held @ all_text.T, held_rows, 5),
            "seen_top1": hits(seen @ all_text.T, seen_rows, 1)}


def train(args) -> None:
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    from . import towers as dm

    torch.manual_seed(args.seed)
    random.seed(args.seed)
    torch.set_num_threads(args.threads)
    concepts = emoji_data.load_concepts()
    held = emoji_data.heldout_split(concepts)
    train_c = [c for c in concepts if c["name"] not in held]
    held_c = [c for c in concepts if c["name"] in held]
    bg = {"name": emoji_data.BACKGROUND_NAME, "category": "background", "subcategory": "background",
          "captions": list(emoji_data.BACKGROUND_CAPTIONS), "keywords": [], "styles": [], "image": None}
    log(f"{len(concepts)} concepts: {len(train_c)} trained, {len(held_c)} held out; plus '{bg['name']}'")
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    icons = {}
    have = {}
    for s in emoji_data.STYLES:
        a, h = emoji_data.load_icons(train_c, s)
        icons[s], have[s] = emoji_data.to_tensor(a), torch.from_numpy(h)
    bank_concepts = train_c + [bg]
    bank, owner = text_bank(bank_concepts, out.parent / "cache")
    n_cls = len(bank_concepts)
    bg_idx = n_cls - 1
    by_concept = [torch.nonzero(owner == i).flatten() for i in range(n_cls)]
    # The targets of the all-concepts term: each trained concept's name under
    # the default templates, as the prompt builder embeds a class (the
    # background keeps its caption mean).
    all_c = train_c + held_c
    all_text = class_text(all_c, out.parent / "cache")
    proto = torch.cat([all_text[:len(train_c)], F.normalize(bank[by_concept[bg_idx]].mean(0), dim=-1)[None]])

    held_rows = torch.arange(len(train_c), len(all_c))
    check_aug = emoji_data.Augmenter(seed=12345)
    held_frames = check_aug(emoji_data.to_tensor(emoji_data.load_icons(held_c, "google")[0]))
    seen_pick = torch.randperm(len(train_c), generator=torch.Generator().manual_seed(54321))[:400]
    seen_icons, seen_have = emoji_data.load_icons([train_c[i] for i in seen_pick], "twitter")
    seen_pick = seen_pick[torch.from_numpy(seen_have)]
    seen_frames = check_aug(emoji_data.to_tensor(seen_icons[seen_have]))
    bf16 = use_bf16(args.autocast)

    net = dm.ImageTower().to(memory_format=torch.channels_last)
    params = sum(p.numel() for p in net.parameters())
    macs = dm.count_macs(net)
    log(f"autocast: {'bf16' if bf16 else 'off (f32)'}")
    log(f"image tower: {params / 1e6:.2f} M parameters, {macs / 1e6:.0f} M MACs ({2 * macs / 1e9:.2f} GFLOPs) "
        f"per {dm.IMAGE_SIZE}x{dm.IMAGE_SIZE} frame")
    logit_scale = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07)))
    opt = torch.optim.AdamW([{"params": net.parameters(), "weight_decay": args.weight_decay},
                             {"params": [logit_scale], "weight_decay": 0.0}], lr=args.lr)
    warm = max(1, args.steps // 20)

    def lr_at(step):
        if step < warm:
            return args.lr * (step + 1) / warm
        t = (step - warm) / max(1, args.steps - warm)
        return args.lr * 0.5 * (1 + math.cos(math.pi * t))

    aug = emoji_data.Augmenter(seed=args.seed)
    mean = torch.tensor(dm.MEAN).view(1, 3, 1, 1)
    std = torch.tensor(dm.STD).view(1, 3, 1, 1)
    g = torch.Generator().manual_seed(args.seed)
    log_f = open(out / "train_log.jsonl", "w")  # noqa: SIM115 - closed after the training loop
    started = time.time()
    bar = tqdm(range(args.steps), desc="training", unit="step")
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        n_bg = max(1, args.batch // 64)
        cls = torch.randperm(n_cls - 1, generator=g)[:args.batch - n_bg]
        cls = torch.cat([cls, torch.full((n_bg,), bg_idx)])
        style = torch.randint(0, len(emoji_data.STYLES), (len(cls),), generator=g)
        batch = torch.zeros(len(cls), 4, dm.IMAGE_SIZE, dm.IMAGE_SIZE)
        for j, (c, s) in enumerate(zip(cls.tolist(), style.tolist())):
            if c == bg_idx:
                continue
            name = emoji_data.STYLES[s]
            if not have[name][c]:
                name = emoji_data.STYLES[1 - s]
            batch[j] = icons[name][c]
        frames = aug(batch)
        x = ((frames - mean) / std).contiguous(memory_format=torch.channels_last)
        pick = torch.stack([by_concept[c][torch.randint(0, len(by_concept[c]), (1,), generator=g)]
                            for c in cls.tolist()]).flatten()
        t = bank[pick]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            feats = net(x)
        img = F.normalize(feats.float(), dim=-1)
        scale = logit_scale.exp().clamp(max=100)
        logits = scale * img @ t.T
        same = (cls[:, None] == cls[None, :]).float()
        target = same / same.sum(1, keepdim=True)
        soft = torch.softmax(t @ t.T / args.soft_temp, dim=1)
        target = (1 - args.soft) * target + args.soft * soft
        loss_i = -(target * F.log_softmax(logits, 1)).sum(1).mean()
        loss_t = -(target.T * F.log_softmax(logits.T, 1)).sum(1).mean()
        target_all = F.one_hot(cls, n_cls).float()
        if args.all_soft > 0:
            near = torch.softmax(proto[cls] @ proto.T / args.soft_temp, dim=1)
            target_all = (1 - args.all_soft) * target_all + args.all_soft * near
        loss_all = -(target_all * F.log_softmax(scale * img @ proto.T, dim=1)).sum(1).mean()
        loss = 0.5 * (loss_i + loss_t) + args.all_weight * loss_all
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        rec = {"step": step, "loss": round(loss.item(), 4), "contrastive": round(0.5 * (loss_i + loss_t).item(), 4),
               "all_concepts": round(loss_all.item(), 4), "logit_scale": round(scale.item(), 3),
               "lr": lr_at(step), "seconds": round(time.time() - started, 1)}
        if (args.check_every and (step + 1) % args.check_every == 0) or step + 1 == args.steps:
            rec.update(check(net, mean, std, held_frames, all_text, held_rows, seen_frames, seen_pick))
            log(f"step {step + 1}: loss {rec['loss']:.3f}; held-out top-1 {rec['heldout_top1']:.3f} "
                f"top-5 {rec['heldout_top5']:.3f} among held-out, top-5 {rec['heldout_all_top5']:.3f} among all; "
                f"seen top-1 {rec['seen_top1']:.3f} among all (camera-like, one draw)")
        log_f.write(json.dumps(rec) + "\n")
        log_f.flush()
        bar.set_postfix(loss=f"{rec['loss']:.3f}", scale=f"{rec['logit_scale']:.1f}")
    log_f.close()
    net.eval()
    torch.save({"model": net.state_dict(), "logit_scale": float(logit_scale.detach().exp().clamp(max=100)),
                "args": vars(args), "params": params, "macs": macs, "heldout": sorted(held),
                "train_seconds": round(time.time() - started, 1)}, out / "image_tower.pt")
    (out / "heldout_concepts.txt").write_text("\n".join(sorted(held)) + "\n")
    log(f"trained in {(time.time() - started) / 60:.1f} min; wrote {out / 'image_tower.pt'}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="train_default.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", help="training run folder (checkpoint, log, held-out list)")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--soft", type=float, default=0.2, help="weight of the text-similarity soft target")
    p.add_argument("--soft-temp", type=float, default=0.05)
    p.add_argument("--all-weight", type=float, default=0.5, help="weight of the all-concepts term")
    p.add_argument("--all-soft", type=float, default=0.0,
                   help="share of the all-concepts target spread over text-similar concepts")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--autocast", default="auto", choices=["auto", "bf16", "off"],
                   help="bf16 mixed precision for the image tower (auto: where the CPU has native bf16)")
    p.add_argument("--check-every", type=int, default=250, help="held-out check interval (0: never)")
    p.add_argument("--package", help="a finished run folder to export and package")
    p.add_argument("--bundle", default=str(EMOJI_BUNDLE))
    p.add_argument("--precisions", default="int8,f16", type=lambda s: [x for x in s.split(",") if x])
    p.add_argument("--text-precision", default="int8", choices=["f32", "f16", "int8"])
    p.add_argument("--force", action="store_true")
    p.add_argument("--clip-edge", help="clip-edge binary for the prompt store and tract checks "
                                        "(default: target/debug/clip-edge, built with cargo if missing)")
    args = p.parse_args(argv)

    def run() -> None:
        if args.package:
            from .package import package

            package(args)
        elif args.out:
            train(args)
        else:
            p.error("give --out RUN (train) or --package RUN (export)")

    return exit_code(run, codes={DataMissing: 2})


if __name__ == "__main__":
    sys.exit(main())
