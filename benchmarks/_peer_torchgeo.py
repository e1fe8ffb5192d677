"""The torchgeo tiling peer of ``bench_peers``: GeoTIFF -> JPEG tiles in WebDataset tars, the way
a torchgeo user would write it, timed inside this process.

    python benchmarks/_peer_torchgeo.py --tif T --out DIR --tile 256 [--quality 90] [--repeats 2]
                                        [--batch 64] [--check 0,17,143]

Runs in any environment with torchgeo (and so torch, torchvision, rasterio, webdataset): it
imports neither rsdata nor the benchmarks package, so ``bench_peers`` can run it with another
virtualenv's interpreter (``.venv-peers``, see ``benchmarks/peers_env.sh``) when torchgeo cannot be
installed next to rsdata's pinned torch. Prints one JSON object on stdout.

Per tile: ``RasterDataset`` + ``GridGeoSampler(size=tile, stride=tile)`` through a ``DataLoader``
(``num_workers=0``: one process, like rsdata's ``workers=1``; ``stack_samples``), the float32
tensor back to uint8 HWC, Pillow JPEG at the same quality, and a ``webdataset.TarWriter`` of
``jpg`` + ``json`` (the tile's bounds and CRS), a tar per ``--shard-size`` tiles.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import time
from pathlib import Path
from typing import Any


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tif", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True, help="folder for the tars (emptied per run)")
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--quality", type=int, default=90)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--shard-size", type=int, default=1000)
    ap.add_argument("--check", default="0", help="tile indices whose pixels are hashed (md5 of "
                    "the uint8 CHW array) with their bounds: the caller checks they are its tiles")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    import numpy as np
    import torch
    import torchgeo
    import webdataset as wds
    from PIL import Image
    from torch.utils.data import DataLoader
    from torchgeo.datasets import RasterDataset, stack_samples
    from torchgeo.samplers import GridGeoSampler

    import_s = time.perf_counter() - t0
    torch.set_num_threads(1)  # one core, like the rsdata side (workers=1)
    check = {int(i) for i in args.check.split(",") if i.strip()}

    class Tif(RasterDataset):  # a plain RGB GeoTIFF: every file matches, bands as stored
        filename_glob = args.tif.name
        is_image = True

    runs: list[dict[str, Any]] = []
    checks: list[dict[str, Any]] = []
    for rep in range(max(1, args.repeats)):
        for old in args.out.glob("*.tar"):
            old.unlink()
        args.out.mkdir(parents=True, exist_ok=True)
        t_setup = time.perf_counter()
        ds = Tif(paths=str(args.tif))  # indexes the file (bounds, CRS, resolution)
        sampler = GridGeoSampler(ds, size=args.tile, stride=args.tile)
        loader = DataLoader(ds, sampler=sampler, batch_size=args.batch, num_workers=0,
                            collate_fn=stack_samples)
        setup_s = time.perf_counter() - t_setup
        n = 0
        nbytes = 0
        tar = None
        t_run, c_run = time.perf_counter(), time.process_time()
        for batch in loader:
            images = batch["image"]  # (B, 3, H, W) float32
            arr = images.clamp(0, 255).to(torch.uint8).numpy()
            for b in range(arr.shape[0]):
                if n % args.shard_size == 0:
                    if tar is not None:
                        tar.close()
                    tar = wds.TarWriter(str(args.out / f"tg-{n // args.shard_size:05d}.tar"),
                                        encoder=False)
                chw = arr[b]
                x, y, _t = batch["bounds"][b]
                bounds = [float(x.start), float(y.start), float(x.stop), float(y.stop)]
                if rep == 0 and n in check:
                    checks.append({"index": n, "bounds": bounds,
                                   "md5": hashlib.md5(np.ascontiguousarray(chw).tobytes()).hexdigest(),
                                   "shape": list(chw.shape)})
                buf = io.BytesIO()
                Image.fromarray(np.ascontiguousarray(chw.transpose(1, 2, 0))).save(
                    buf, format="JPEG", quality=args.quality)
                jpg = buf.getvalue()
                nbytes += len(jpg)
                meta = {"key": f"tg_{n:06d}", "bounds": bounds, "crs": str(batch["crs"][b])}
                tar.write({"__key__": f"tg_{n:06d}", "jpg": jpg, "json": json.dumps(meta).encode()})
                n += 1
        if tar is not None:
            tar.close()
        run_s = time.perf_counter() - t_run
        cpu_s = time.process_time() - c_run
        runs.append({"seconds": run_s, "setup_s": setup_s, "tiles": n, "cpu_s": cpu_s,
                     "tiles_per_s": n / run_s if run_s else 0.0,
                     "tiles_per_cpu_s": n / cpu_s if cpu_s else 0.0,
                     "jpeg_kb_mean": nbytes / max(1, n) / 1024})
        print(f"[torchgeo peer] run {rep + 1}: {n} tiles in {run_s:.2f} s "
              f"(setup {setup_s:.2f} s)", file=sys.stderr, flush=True)
    best = min(runs, key=lambda r: r["seconds"])
    import rasterio
    import torchvision

    out = {"best": best, "runs": runs, "import_s": import_s, "checks": checks,
           "versions": {"torchgeo": torchgeo.__version__, "torch": torch.__version__,
                        "torchvision": torchvision.__version__,
                        "webdataset": getattr(wds, "__version__", "?"),
                        "rasterio": rasterio.__version__, "python": sys.version.split()[0]}}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
