"""OpenAI's CIFAR-100 zero-shot example, through miniclip (no torch).

    python examples/zeroshot_cifar100.py [--model ViT-B/32] [--index 3637]

Needs OpenAI's ViT-B/32 weights (downloaded once into ~/.cache/miniclip, or
found in MINICLIP_ASSETS) and CIFAR-100 (MINICLIP_DATA, the cache, or a
download). Without network access, put `ViT-B-32.pt` in a folder and point
MINICLIP_ASSETS at it.
"""
import argparse
import sys

import numpy as np
from PIL import Image

import miniclip as clip
import miniclip.functional as F
from miniclip.data.cifar import load_cifar
from miniclip.download import DownloadError


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B/32", help=f"one of {clip.available_models()}")
    parser.add_argument("--index", type=int, default=3637, help="a CIFAR-100 test image")
    args = parser.parse_args()
    try:
        model, preprocess = clip.load(args.model)
        images, labels, classes = load_cifar("cifar100", "test")
    except (DownloadError, FileNotFoundError) as err:
        sys.exit(f"cannot run the example: {err}")

    # Prepare the inputs: one CIFAR-100 test image, one prompt per class
    image, class_id = Image.fromarray(images[args.index]), labels[args.index]
    image_input = preprocess(image)[None]                              # (1, 3, 224, 224)
    text_inputs = clip.tokenize([f"a photo of a {c}" for c in classes])  # (100, 77)

    # Calculate features
    with clip.no_grad():
        image_features = F.normalize(model.encode_image(image_input), axis=-1)
        text_features = F.normalize(model.encode_text(text_inputs), axis=-1)

    # Pick the top 5 most similar labels for the image
    similarity = F.softmax(100.0 * image_features @ text_features.T, axis=-1).numpy()[0]
    top5 = np.argsort(-similarity)[:5]

    print(f"\nTrue class: {classes[class_id]}\nTop predictions:\n")
    for index in top5:
        print(f"{classes[index]:>16s}: {100 * similarity[index]:.2f}%")


if __name__ == "__main__":
    main()
