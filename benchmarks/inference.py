"""CPU inference images/s: PyTorch eager vs the exported ONNX model in onnxruntime.

Trains nothing: builds the model untrained (speed does not depend on the weights), exports it the way
`vislab export` does, and times both on the same batches. Run:
python benchmarks/inference.py [--model resnet20] [--size 32] [--batch 64]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from vislab.export import export_onnx, onnx_runner
from vislab.models import create_model


def images_per_s(run, inputs: torch.Tensor, seconds: float = 5.0) -> float:
    run(inputs)  # warm-up
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        run(inputs)
        done += len(inputs)
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batches", default="1,64")
    args = parser.parse_args()
    model = create_model(args.model, 10, 3, args.size).eval()
    meta = {
        "task": "classification",
        "classes": [str(i) for i in range(10)],
        "channels": 3,
        "image_size": args.size,
        "mean": [0.5] * 3,
        "std": [0.25] * 3,
        "model": args.model,
    }
    results = {"model": args.model, "size": args.size, "threads": torch.get_num_threads(), "images_per_s": {}}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        export_onnx(model, torch.randn(2, 3, args.size, args.size), meta, path)
        _, onnx_run = onnx_runner(path)
        for batch in map(int, args.batches.split(",")):
            inputs = torch.randn(batch, 3, args.size, args.size)
            with torch.inference_mode():
                eager = images_per_s(model, inputs)
            results["images_per_s"][f"batch {batch}"] = {
                "pytorch": round(eager),
                "onnxruntime": round(images_per_s(onnx_run, inputs)),
            }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
