r"""The paper's Table 6, measured: HA-Net and the three baselines side by side.

    python scripts/table6.py --json_dir workdirs/table6 [--image_size 256 --batch_size 2 \
        --repeats 3] [--doc docs/baselines.md]

Runs `bench.py --architecture NAME --no_keras --noserving` once per architecture (each in its own
process, one after the other), then writes one row per architecture: trainable parameters, the
float32 size of all parameters and BatchNorm statistics, the forward pass's conv + matmul multiply-accumulates
(what the paper's "GFLOPs" count; `bench.flops.matmul_macs`) and XLA's FLOPs at batch 1, the
train step's peak memory (arguments + outputs + temporaries, XLA's memory analysis) and CPU
training images/s, with the paper's three figures beside ours. `--doc` writes the table between
the `<!-- table6:begin -->` and `<!-- table6:end -->` markers of that file; without it, prints.
A JSON already in --json_dir for the same setting is reused (`--rerun` measures again).
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

from absl import flags

from hanet_jax import command_line
from hanet_jax.models.architectures import ARCHITECTURES
import results_table  # beside this script (Python imports from a script's own folder): the marker writer

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- table6:begin -->", "<!-- table6:end -->"
# The paper's Table 6: parameters (M), "GFLOPs" (multiply-accumulates, G), size (MB).
PAPER = {"hanet": (15.43, 8.01, 60.62), "unet": (34.51, 46.02, 134.82),
         "attention_unet": (8.14, 45.62, 31.81), "unet_plus_plus": (9.04, 28.45, 35.32)}
NAMES = {"hanet": "HA-Net (`full`)", "unet": "U-Net", "attention_unet": "Attention U-Net",
         "unet_plus_plus": "UNet++"}


def _define_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("json_dir", None, "where each architecture's bench JSON goes", flag_values=fv,
                        required=True)
    flags.DEFINE_integer("image_size", 256, "square input side", flag_values=fv)
    flags.DEFINE_integer("batch_size", 2, "training images per timed step", flag_values=fv)
    flags.DEFINE_integer("repeats", 3, "timed repeats (median)", flag_values=fv)
    flags.DEFINE_bool("rerun", False, "measure again even where a JSON exists", flag_values=fv)
    results_table.define_doc_flag(fv)


COMMAND = command_line.Command("python scripts/table6.py", __doc__, _define_flags)


def measure(name: str, args) -> dict:
    out = Path(args.json_dir) / f"{name}.json"
    cmd = [sys.executable, str(ROOT / "bench.py"), f"--architecture={name}", "--no_keras",
           "--noserving", f"--image_size={args.image_size}", f"--batch_size={args.batch_size}",
           f"--repeats={args.repeats}", f"--json={out}"]
    if out.is_file() and not args.rerun:
        result = json.loads(out.read_text())
        s = result["setting"]
        if (s["image_size"][0], s["batch_size"], s["repeats"]) == (
                args.image_size, args.batch_size, args.repeats):
            return result
    print(f"$ {shlex.join(cmd)}", file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)
    return json.loads(out.read_text())


def table(results: dict[str, dict], args) -> str:
    rows = []
    for name, r in results.items():
        paper = PAPER[name]
        params = r["params"]["trainable"]
        f, m, t = r["flops"], r["memory"], r["throughput"]
        rows.append(f"| {NAMES[name]} | {params / 1e6:.2f} | {paper[0]:.2f} | "
                    f"{f['jax_forward_conv_gmacs']:.2f} | {paper[1]:.2f} | "
                    f"{f['jax_forward_gflops']:.2f} | {m['params_mb']:.2f} | {paper[2]:.2f} | "
                    f"{m['train_step_peak_mb']:.0f} | {t['jax_train_img_s']:.2f} |")
    device = next(iter(results.values()))["device"]
    date = max(r["date"] for r in results.values())
    return "\n".join([
        "| network | trainable params (M) | paper | GMACs | paper \"GFLOPs\" | XLA GFLOPs | float32 MB "
        "| paper MB | train step peak MB | CPU train images/s |",
        "|---|---|---|---|---|---|---|---|---|---|", *rows, "",
        f"At {args.image_size}x{args.image_size}; GMACs and XLA GFLOPs of the forward pass at "
        f"batch 1; peak memory and images/s of the train step at batch {args.batch_size} "
        f"(median of {args.repeats}) on {device['platform']} ({device['cpu_count']} CPUs), "
        f"{date}. The float32 MB hold the BatchNorm statistics too; the paper's figures are its own.",
        "", f"Written by `python scripts/table6.py --json_dir {args.json_dir} --image_size "
            f"{args.image_size} --batch_size {args.batch_size} --repeats {args.repeats}`."])


def main(argv=None) -> int:
    args = COMMAND.parse(argv)
    Path(args.json_dir).mkdir(parents=True, exist_ok=True)
    results = {name: measure(name, args) for name in ARCHITECTURES}
    text = table(results, args)
    print(text)
    if args.doc:
        results_table.write_doc(Path(args.doc), text, BEGIN, END)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
