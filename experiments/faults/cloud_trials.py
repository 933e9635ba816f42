"""Issue 35's trials, rerun as a cloud user would: prints what each command printed.

    python experiments/faults/cloud_trials.py [--only gcs,corrupt,sigterm,images] [--keep DIR]

- gcs: `train.py --config=configs/smoke.py --workdir=gs://test-bucket/run` on a GCS emulator
  (fake-gcs-server on 127.0.0.1), then `eval.py` and `predict.py` on it, from an empty folder;
  lists the bucket and the folder afterwards.
- corrupt: a local smoke run, bits flipped in its newest checkpoint's array data, then a longer
  run resumes (falls back a step), and `eval.py` on that step's directory (one line).
- sigterm: a smoke run of many epochs gets SIGTERM after its first logged step: exit status and
  seconds from the signal to the exit.
- images: a 1x1 PNG and a 16-bit PNG whose maximum is 199 through `hanet-data-check`-style
  reading and `predict.py`.
One-off: not part of the package or the tests (tests/test_gcs_workdir.py,
tests/test_checkpoint_corruption.py, tests/test_train.py and tests/test_bad_images.py are).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable


def show(title, proc, lines=6):
    print(f"\n$ {title}\n  exit status {proc.returncode}")
    noise = ("I0000", "WARNING: All log", "W0000", "WARNING:absl:", "I1", "W1")  # absl/TF logs
    text = [ln for ln in (proc.stdout + proc.stderr).splitlines()
            if ln.strip() and not ln.startswith(noise)
            or "done: best" in ln or "unreadable" in ln or "preempted" in ln or "mirror" in ln]
    for line in text[-lines:]:
        print("  | " + line[:300])


def run(cmd, env=None, cwd=None, timeout=1200):
    return subprocess.run(cmd, env={**os.environ, **(env or {})}, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def smoke(workdir, *extra):
    return [PY, str(ROOT / "train.py"), f"--config={ROOT / 'configs' / 'smoke.py'}",
            f"--workdir={workdir}", *extra]


def trial_gcs(tmp: Path):
    sys.path.insert(0, str(ROOT / "tests"))
    from _gcs_emulator import GcsEmulator

    with GcsEmulator() as gcs:
        env = {**gcs.env, "PYTHONPATH": str(ROOT)}
        cwd = tmp / "empty"
        cwd.mkdir()
        run_dir = "gs://test-bucket/run"
        show(f"(cd {cwd}; python train.py --config=configs/smoke.py --workdir={run_dir})",
             run(smoke(run_dir), env, cwd), 3)
        data = tmp / "data" / "test"
        _phantoms(data, 3)
        show(f"python eval.py --checkpoint {run_dir} --data_dir {data.parent} --layout processed "
             f"--split test --protocol both --out {run_dir}/eval_test.json --overlays {run_dir}/overlays",
             run([PY, str(ROOT / "eval.py"), "--checkpoint", run_dir, "--data_dir", str(data.parent),
                  "--layout", "processed", "--split", "test", "--protocol", "both",
                  "--out", f"{run_dir}/eval_test.json", "--overlays", f"{run_dir}/overlays"],
                 env, cwd), 2)
        show(f"python predict.py --checkpoint {run_dir} --input {data / 'images'} --output {run_dir}/masks",
             run([PY, str(ROOT / "predict.py"), "--checkpoint", run_dir, "--input",
                  str(data / "images"), "--output", f"{run_dir}/masks"], env, cwd), 1)
        names = gcs.objects()
        top = sorted({"/".join(n.split("/")[:3 if n.startswith("run/checkpoints/") else 2])
                      for n in names})
        print(f"  bucket: {len(names)} objects under gs://test-bucket/: {', '.join(top)}")
        print(f"  local folder {cwd}: {sorted(os.listdir(cwd)) or 'empty'}")


def _phantoms(split_dir: Path, n: int):
    from hanet_jax.data import synthetic

    images, masks = synthetic.make_split("test", n, 64, seed=1)
    (split_dir / "images").mkdir(parents=True)
    (split_dir / "masks").mkdir(parents=True)
    for i in range(n):
        Image.fromarray(images[i]).save(split_dir / "images" / f"{i + 1}.png")
        mask = np.asarray(masks[i]).reshape(images[i].shape[:2])
        Image.fromarray((mask > 0).astype(np.uint8) * 255).save(
            split_dir / "masks" / f"{i + 1}.png")


def trial_corrupt(tmp: Path):
    workdir = tmp / "corrupt"
    show(f"python train.py --config=configs/smoke.py --workdir={workdir}", run(smoke(workdir)), 1)
    steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    newest = workdir / "checkpoints" / str(steps[-1]) / "variables"
    data = max((p for p in newest.rglob("*") if p.is_file() and "/d/" in str(p)),
               key=lambda p: p.stat().st_size)
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # one flipped byte in the largest array file
    data.write_bytes(bytes(raw))
    print(f"\n  flipped one byte of {data.relative_to(workdir)}")
    data = tmp / "corrupt_data" / "test"
    _phantoms(data, 2)
    show(f"python eval.py --checkpoint {workdir} --data_dir {data.parent} --layout processed "
         f"--split test --out {tmp}/e.json",
         run([PY, str(ROOT / "eval.py"), "--checkpoint", str(workdir), "--data_dir",
              str(data.parent), "--layout", "processed", "--split", "test",
              "--out", str(tmp / "e.json")]), 2)
    show(f"python train.py --config=configs/smoke.py --workdir={workdir} --config.num_epochs=3",
         run(smoke(workdir, "--config.num_epochs=3")), 4)
    print(f"  {workdir / 'checkpoints'}: {sorted(os.listdir(workdir / 'checkpoints'))}")


def trial_sigterm(tmp: Path):
    workdir = tmp / "sigterm"
    proc = subprocess.Popen(smoke(workdir, "--config.num_epochs=50"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "train/loss" in line:  # the first step has run
            break
    sent = time.time()
    proc.send_signal(signal.SIGTERM)
    rest = proc.stdout.read()
    proc.wait()
    seconds = time.time() - sent
    print(f"\n$ python train.py --config=configs/smoke.py --workdir={workdir} "
          f"--config.num_epochs=50   # SIGTERM after the first logged step\n"
          f"  exit status {proc.returncode}, {seconds:.1f} s from the signal to the exit")
    for line in (lines + rest.splitlines(keepends=True)):
        if "preempted" in line:
            print("  | " + line.strip()[:300])


def trial_images(tmp: Path):
    folder = tmp / "images"
    folder.mkdir()
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(folder / "one_pixel.png")
    deep = (np.linspace(0, 199, 64 * 64).reshape(64, 64)).astype(np.uint16)
    Image.fromarray(deep).save(folder / "sixteen_bit.png")
    from hanet_jax.data import layouts

    for name in ("one_pixel.png", "sixteen_bit.png"):
        try:
            image = layouts.read_image(str(folder / name))
            print(f"\n  read_image({name}): {image.shape} {image.dtype}, max {image.max()} "
                  f"(a 16-bit maximum of 199 of 65535 is dark, not white)")
        except layouts.DatasetError as e:
            print(f"\n  read_image({name}): DatasetError: {e}")
    smoke_dir = tmp / "corrupt" if (tmp / "corrupt").exists() else None
    if smoke_dir is None:
        smoke_dir = tmp / "for_predict"
        run(smoke(smoke_dir))
    step = sorted(int(p.name) for p in (smoke_dir / "checkpoints").iterdir() if p.name.isdigit())[0]
    show(f"python predict.py --checkpoint {smoke_dir}/checkpoints/{step} --input {folder} --output {tmp}/masks",
         run([PY, str(ROOT / "predict.py"), "--checkpoint", str(smoke_dir / "checkpoints" / str(step)),
              "--input", str(folder), "--output", str(tmp / "masks")]), 3)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default="gcs,corrupt,sigterm,images")
    parser.add_argument("--keep", help="work in this folder (kept) instead of a temporary one")
    args = parser.parse_args()
    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="cloud_trials_"))
    tmp.mkdir(parents=True, exist_ok=True)
    os.chdir(ROOT)
    for name in args.only.split(","):
        print(f"\n===== {name} =====", flush=True)
        globals()[f"trial_{name}"](tmp)
        sys.stdout.flush()
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
