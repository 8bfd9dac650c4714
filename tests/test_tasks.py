"""Datasets as tasks (miniclip/tasks.py): the honest headline, evaluation-only
tasks, and `python -m miniclip eval` built on them."""
import dataclasses
import json

import numpy as np
import pytest

from miniclip import tasks
from miniclip.checkpoint import save_checkpoint
from miniclip.cli import main
from miniclip.config import get_config
from miniclip.model import CLIP
from miniclip.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def micro():
    tokenizer = Tokenizer.default()
    config = dataclasses.replace(get_config("micro"), vocab_size=len(tokenizer))
    return CLIP(config, seed=0), tokenizer


def test_shapes_headline_is_the_mean_of_all_four_zero_shot_tasks(micro):
    model, tokenizer = micro
    task = tasks.make_task("shapes", train=False)
    assert task.train_images is None and task.groups is None   # evaluation only: no training set
    assert task.zero_shot == ("test/colour", "test/shape", "test/size", "test/position")
    result = task.evaluate(model, tokenizer, limit=200)
    assert result["zero_shot_accuracy"] == pytest.approx(np.mean([result[k] for k in task.zero_shot]))
    assert {"heldout/object", "test/image_to_text_R@1"} <= set(result)   # reported beside it


def test_a_training_task_has_one_group_per_image():
    task = tasks.make_task("shapes", train_size=64)
    assert task.train_images.shape == (64, 32, 32, 3) and task.groups.shape == (64,)
    assert len(task.captions(np.arange(3), np.random.default_rng(0))) == 3


def test_an_unknown_dataset_is_refused_before_loading():
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'.*csv:PATH"):
        tasks.make_task("imagenet")


def test_cli_eval_scores_a_checkpoint(tmp_path, micro, capsys):
    model, tokenizer = micro
    path = tmp_path / "checkpoint.npz"
    save_checkpoint(path, model, meta={"config": {"dataset": "shapes", "seed": 0},
                                       "model": dataclasses.asdict(model.config),
                                       "tokenizer_merges": tokenizer.merges})
    assert main(["eval", "--checkpoint", str(path), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["zero_shot_accuracy"] == pytest.approx(
        np.mean([result[f"test/{a}"] for a in ("colour", "shape", "size", "position")]))
