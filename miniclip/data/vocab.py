"""miniclip's own vocabulary: how miniclip_bpe.txt.gz (beside this file) is made.

    python -m miniclip tokenize --train        # rebuilds it with the defaults below

The shipped file is a BPE merge list (OpenAI's format) learned by
`miniclip.tokenizer.train_bpe` from the texts the built-in datasets speak:
shapes captions and prompts, and every CIFAR-10/100 class name in OpenAI's
18 prompt templates. `Tokenizer.default()` reads it.
"""
from miniclip.tokenizer import DEFAULT_VOCAB_PATH, train_bpe

DEFAULT_NUM_MERGES = 1000  # an upper bound: training stops once no pair occurs twice


def default_vocab_corpus(num_captions=20000, seed=0):
    """The texts miniclip's vocabulary is learned from (a list of str).

    Captions of the built-in shapes dataset (with its zero-shot prompts), and
    every CIFAR-10 and CIFAR-100 class name in OpenAI's 18 prompt templates.
    """
    from miniclip.data.cifar import CIFAR10_CLASSES, CIFAR100_CLASSES, TEMPLATES
    from miniclip.data.shapes import caption_corpus

    texts = list(caption_corpus(num_captions=num_captions, seed=seed))
    for name in list(CIFAR10_CLASSES) + list(CIFAR100_CLASSES):
        texts.extend(template.format(name) for template in TEMPLATES)
    return texts


def build_default_vocab(out_path=DEFAULT_VOCAB_PATH, num_merges=DEFAULT_NUM_MERGES,
                        verbose=False):
    """Train miniclip's vocabulary on `default_vocab_corpus()` and save it to out_path.

    Returns the Tokenizer. The shipped miniclip_bpe.txt.gz was made with the defaults.
    """
    tokenizer = train_bpe(default_vocab_corpus(), num_merges, verbose=verbose)
    tokenizer.save(out_path)
    return tokenizer
