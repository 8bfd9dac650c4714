"""Write the built-in shapes test images as a Flickr30k-style retrieval set: a folder of PNGs
and a Karpathy-split file (dataset_flickr30k.json) with five differently worded captions each.

    python examples/shapes_as_flickr.py shapes-flickr          # 1,000 test images
    python -m miniclip eval --checkpoint runs/shapes-tiny/checkpoint.npz \\
        --dataset karpathy:shapes-flickr/dataset_flickr30k.json \\
        --images shapes-flickr/images --split test

`eval` reads it back exactly as it reads Flickr30k's and COCO's own split files.
"""
import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from miniclip.data.shapes import ShapesDataset


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="folder to write into")
    parser.add_argument("--images", type=int, default=1000, help="test images (default: 1000)")
    parser.add_argument("--seed", type=int, default=0, help="the shapes seed (a run's --seed)")
    args = parser.parse_args()
    test = ShapesDataset("test", seed=args.seed)
    indices = np.arange(min(args.images, len(test)))
    folder = Path(args.out) / "images"
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for i, pixels, captions in zip(indices, test.images(indices), test.caption_set(indices, 5)):
        Image.fromarray(pixels).save(folder / f"{i:05d}.png")
        entries.append({"filename": f"{i:05d}.png", "split": "test", "imgid": int(i),
                        "sentences": [{"raw": c} for c in captions]})
    path = Path(args.out) / "dataset_flickr30k.json"
    path.write_text(json.dumps({"images": entries, "dataset": "shapes"}))
    print(f"wrote {len(entries)} images and {5 * len(entries)} captions: {path}")


if __name__ == "__main__":
    main()
