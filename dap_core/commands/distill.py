"""`dap distill`: train a small student DAP on a teacher's labels of unlabeled panoramas.

Data: a folder of ERP panoramas (--images) or the image topic of a rosbag2 bag (--bag, its
frames are first written as PNGs under OUTPUT_DIR/frames). The config is a training YAML
(student model, data.size, schedule; e.g. training/distill/tiny.yaml). See dap_core.distill.
Several processes: torchrun --nproc_per_node=N -m dap_core.cli distill ...
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "distill",
        help="distil a teacher's labels on unlabeled panoramas into a small student model",
    )
    parser.add_argument("--config", required=True, help="training YAML of the student")
    parser.add_argument(
        "--teacher", required=True, help="teacher weights (dir, .safetensors, .pth)"
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", help="folder of ERP panoramas (recursive)")
    source.add_argument("--bag", help="rosbag2 bag whose image topic gives the panoramas")
    parser.add_argument("--topic", default=None, help="with --bag: the image topic")
    parser.add_argument("--every", type=int, default=1, help="with --bag: keep every N-th frame")
    parser.add_argument("--cache-dir", default=None, help="teacher labels (default OUT/labels)")
    parser.add_argument("--resume", action="store_true", help="continue a killed run")
    parser.add_argument(
        "--init-from-teacher",
        action="store_true",
        help="start the student from the teacher's weights where the shapes agree",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set output_dir=runs/student (repeatable)",
    )
    parser.set_defaults(func=run)


def bag_frames(bag: str, topic: str | None, out_dir, every: int = 1) -> int:
    """Write every `every`-th panorama of the bag's image topic as PNG; returns the count."""
    from pathlib import Path

    import cv2
    from rosbags.rosbag2 import Reader

    from dap_ros import decode
    from dap_ros.bag import _image_connection
    from dap_ros.bag_messages import typestore

    if every < 1:
        raise ValueError(f"--every must be >= 1, got {every}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    store = typestore()
    written = 0
    with Reader(bag) as reader:
        conn = _image_connection(reader, topic)
        for n, (_, timestamp, raw) in enumerate(reader.messages(connections=[conn])):
            if n % every:
                continue
            msg = store.deserialize_cdr(raw, conn.msgtype)
            try:
                if conn.msgtype.endswith("CompressedImage"):
                    rgb = decode.compressed_to_rgb(msg)
                else:
                    rgb = decode.image_to_rgb(msg)
            except decode.InputError:
                continue
            path = out_dir / f"{timestamp:020d}.png"
            if not path.exists():
                cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            written += 1
    return written


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from dap_core.distill import run_distill
    from dap_core.train.config import load_config
    from dap_core.train.distributed import cleanup, init_distributed

    cfg = load_config(args.config, args.overrides)
    images = args.images
    if args.bag is not None:
        images = Path(cfg.output_dir) / "frames"
        count = bag_frames(args.bag, args.topic, images, args.every)
        print(f"{count} panoramas from {args.bag} in {images}")
    wants_cuda = cfg.runtime.device == "cuda" or (
        cfg.runtime.device == "auto" and torch.cuda.is_available()
    )
    env = init_distributed("cuda" if wants_cuda else "cpu")
    try:
        report = run_distill(
            cfg,
            args.teacher,
            images,
            env,
            cache_dir=args.cache_dir,
            resume=args.resume,
            init_student=args.init_from_teacher,
        )
    finally:
        cleanup(env)
    if env.is_main:
        print(
            f"distilled {report.images} panoramas ({report.labeled} labeled now, "
            f"{report.cached} cached); student: {report.model_dir}"
        )
    return 0
