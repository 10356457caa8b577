"""The ``streetvision`` command: verify, inspect, predict.

Kept light: no torch/Lightning import unless a subcommand needs one.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from streetvision.io.manifest import lineage, verify_tree


def cmd_verify(args: argparse.Namespace) -> int:
    root = Path(args.directory)
    if not root.exists():
        print(f"error: {root} does not exist", file=sys.stderr)
        return 2
    checked, problems = verify_tree(root, deep=args.deep)
    for line in problems:
        print(f"MISMATCH {line}")
    if checked == 0:
        print(f"error: no manifest.json found under {root}", file=sys.stderr)
        return 2
    status = "FAILED" if problems else "OK"
    print(f"{status}: {checked} manifest(s) checked, {len(problems)} mismatch(es)")
    return 1 if problems else 0


def _format_node(node: dict, depth: int) -> list[str]:
    m = node["manifest"]
    pad = "  " * depth
    git = m.get("git") or {}
    versions = ", ".join(f"{k} {v}" for k, v in (m.get("versions") or {}).items() if v)
    lines = [
        f"{pad}{m['phase']} [{m.get('experiment')}] {node['path']}",
        f"{pad}  finished {m.get('finished_at')} in {m.get('duration_s')} s on {m.get('device')} "
        f"({m.get('host')})", f"{pad}  config {m.get('config_hash', '')[:16]}  seed {m.get('seed')}  "
        f"git {(git.get('commit') or 'none')[:12]}{' (dirty)' if git.get('dirty') else ''}",
        f"{pad}  {len(m['artifacts'])} artifact(s); consumed {len(m['consumed'])} manifest(s)",
        f"{pad}  versions: {versions}",
    ]
    if m.get("slurm_job_id"):
        lines.append(f"{pad}  SLURM job {m['slurm_job_id']}")
    return lines


def cmd_inspect(args: argparse.Namespace) -> int:
    path = Path(args.manifest)
    if path.is_dir():
        path = path / "manifest.json"
    if not path.is_file():
        print(f"error: {path} does not exist", file=sys.stderr)
        return 2
    try:
        chain = lineage(path)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    depth_of = {chain[0]["path"]: 0}
    for node in chain:
        depth = depth_of.get(node["path"], 0)
        for entry in node["manifest"]["consumed"]:
            depth_of.setdefault((node["path"].parent / entry["path"]).resolve(), depth + 1)
        print("\n".join(_format_node(node, depth)))
    return 0


def load_detector(path: str, device: str):
    """A bundle (verified) or a Hugging Face repo folder (served the stock miner's way)."""
    from streetvision.bundle.hf_miner import is_hf_repo, load_hf_detector
    from streetvision.bundle.load import load_bundle

    return load_hf_detector(path) if is_hf_repo(path) else load_bundle(path, device=device)


def _finite_answer(details: dict) -> dict:
    """The detector's answer for one image; a non-finite number is an error, never printed (JSON has none)."""
    import math

    from streetvision.errors import StreetvisionError

    bad = [key for key, value in details.items() if isinstance(value, float) and not math.isfinite(value)]
    if bad:
        raise StreetvisionError(f"the model returned non-finite {', '.join(bad)}")
    return details


def cmd_predict(args: argparse.Namespace) -> int:
    """One JSON line per image on stdout; an image that cannot be read (or is larger than --max-pixels) is
    reported on stderr and skipped, and the exit code is then 1."""
    import json

    from streetvision.data.images import display_name, read_rgb
    from streetvision.errors import StreetvisionError

    detector = load_detector(args.model, args.device)
    failures = 0
    for path in args.images:
        shown = display_name(path)
        try:
            details = _finite_answer(detector.predict_details([read_rgb(path, args.max_pixels)])[0])
        except (StreetvisionError, OSError) as err:
            failures += 1
            reason = err.strerror if isinstance(err, OSError) and err.strerror else err
            print(json.dumps({"path": shown, "error": f"cannot read image: {reason}"}), file=sys.stderr)
            continue
        print(json.dumps({"path": shown, **details}, allow_nan=False), flush=True)
    return 1 if failures else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streetvision", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    verify = sub.add_parser("verify", help="re-hash every artifact of every manifest under DIR")
    verify.add_argument("directory")
    verify.add_argument("--deep", action="store_true",
                        help="also re-hash every image the data indexes list (sizes are always checked); "
                             "reads "
                             "every image byte, so it costs about the disk's read time for the data set")
    verify.set_defaults(func=cmd_verify)
    inspect = sub.add_parser("inspect", help="print the lineage of a phase manifest")
    inspect.add_argument("manifest")
    inspect.set_defaults(func=cmd_inspect)
    predict = sub.add_parser("predict",
                             help="run a bundle or a Hugging Face export on images: one JSON line per image")
    predict.add_argument("--model", "--bundle", dest="model", required=True,
                         help="a bundle (results/<exp>/phase6_bundle/bundle) or a Hugging Face repo folder "
                              "(results/<exp>/hf_export/repo, served the stock miner's way)")
    predict.add_argument("--device", default="cpu")
    predict.add_argument("--max-pixels", type=int, default=None,
                         help="refuse images with more pixels than this (default: data.max_pixels' default, "
                              "40 MP)")
    predict.add_argument("images", nargs="+")
    predict.set_defaults(func=cmd_predict)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Bad input (a streetvision error: it names the file or key) is one line on stderr and exit code 2."""
    from streetvision.errors import StreetvisionError

    args = build_parser().parse_args(argv)
    if getattr(args, "max_pixels", 0) is None:
        from streetvision.data.images import DEFAULT_MAX_PIXELS

        args.max_pixels = DEFAULT_MAX_PIXELS
    try:
        return args.func(args)
    except StreetvisionError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
