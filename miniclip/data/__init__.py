"""Data: the built-in captioned shapes, CIFAR, your own CSV of pairs, preprocessing, batching.

    from miniclip.data import ShapesDataset, load_cifar, CsvDataset, DataLoader
"""
from miniclip.data.cifar import CIFAR10_CLASSES, CIFAR100_CLASSES, TEMPLATES, load_cifar
from miniclip.data.csv import CsvDataset
from miniclip.data.loader import DataLoader, label_captions
from miniclip.data.shapes import (COLOURS, POSITIONS, SHAPES, SIZES, ShapesDataset,
                                  caption_corpus, zero_shot_tasks)
from miniclip.data.transforms import (MEAN, STD, Preprocess, normalize_batch, random_crop,
                                      random_flip)
