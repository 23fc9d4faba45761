"""Small Hugging Face parts for offline loading tests: a hub-cache snapshot folder and an XLM-R-style
tokenizer trained here (the real ones cannot be downloaded on this machine)."""

from __future__ import annotations

import os
from typing import Any


def cache_dir(repo: str, revision: str = "1" * 40) -> str:
    """A snapshot folder for `repo` in the Hugging Face cache (HF_HOME), where hub downloads land."""
    from huggingface_hub.constants import HF_HUB_CACHE

    base = os.path.join(HF_HUB_CACHE, "models--" + repo.replace("/", "--"))
    os.makedirs(os.path.join(base, "snapshots", revision), exist_ok=True)
    os.makedirs(os.path.join(base, "refs"), exist_ok=True)
    with open(os.path.join(base, "refs", "main"), "w") as ref:
        ref.write(revision)
    return os.path.join(base, "snapshots", revision)


def xlm_roberta_tokenizer(corpus: list[str], vocab_size: int = 200) -> Any:
    """An XLMRobertaTokenizerFast (sentencepiece-style unigram, XLM-R's special tokens) trained on `corpus`."""
    import transformers
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok.train_from_iterator(corpus, trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=specials, unk_token="<unk>"))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    return transformers.XLMRobertaTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                                pad_token="<pad>", mask_token="<mask>", cls_token="<s>", sep_token="</s>")
