"""Non-English queries: script detection, routing, and the M-CLIP loading path (offline, tiny model)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import TEST_MODEL, captions_of

from image_search import ImageSearchEngine
from photoseek.encoders.multilingual import QueryRouter, needs_multilingual
from photoseek.errors import ModelLoadError


@pytest.mark.parametrize("text,expected", [
    ("a cute cat", False), ("café crème brûlée", False), ("ＡＢＣ full-width Latin", False), ("🐱🐶 123 !?", False),
    ("一只可爱的猫咪", True), ("猫咪 and a dog", True), ("（全角标点）！", True), ("Привет, кот", True),
    ("القطة", True), ("ねこ", True),
])
def test_script_detection(text: str, expected: bool) -> None:
    assert needs_multilingual(text) is expected


@pytest.mark.slow
def test_bilingual_model_answers_chinese_itself(tmp_path: Path, scenes: Path) -> None:
    captions = captions_of(scenes)
    with ImageSearchEngine(model_name=TEST_MODEL, milvus_uri=str(tmp_path / "zh.db"), device="cpu") as engine:
        engine.index_directory(scenes)
        stats = engine.get_stats()
        assert stats["query_model"] == "auto" and stats["multilingual_query_encoder"] is None
        hits = 0
        for name, caption in captions.items():
            results = engine.search(caption["zh"], top_k=5)
            assert results[0].query_encoder == TEST_MODEL
            hits += any(Path(r.path).name == name for r in results)
        assert hits / len(captions) >= 0.6


def test_auto_routes_non_latin_queries_of_english_models_to_m_clip() -> None:
    router = QueryRouter("ViT-B-32::openai", 512)
    assert router.encoder_name == "M-CLIP/XLM-Roberta-Large-Vit-B-32"
    assert router.route("a cat") is None and router.route("一只猫") == "M-CLIP/XLM-Roberta-Large-Vit-B-32"
    assert QueryRouter("ViT-L-14::openai", 768).encoder_name == "M-CLIP/XLM-Roberta-Large-Vit-L-14"
    assert QueryRouter("ViT-B-32::openai", 512, "never").route("一只猫") is None
    assert QueryRouter("xlm-roberta-base-ViT-B-32::laion5b_s13b_b90k", 512).encoder_name is None


def test_auto_falls_back_with_a_warning_when_the_encoder_cannot_load() -> None:
    def unavailable(name: str, device: str):  # type: ignore[no-untyped-def]
        raise ModelLoadError(f"could not load query encoder {name!r}: offline")

    router = QueryRouter("ViT-B-32::openai", 4, loader=unavailable)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vectors, labels = router.encode(["一只猫", "a cat"], lambda texts: np.ones((len(texts), 4), dtype=np.float32))
    assert labels == ["ViT-B-32::openai", "ViT-B-32::openai"] and vectors.shape == (2, 4)
    assert "own text tower" in str(caught[0].message)
    explicit = QueryRouter("ViT-B-32::openai", 4, "M-CLIP/XLM-Roberta-Large-Vit-B-32", loader=unavailable)
    with pytest.raises(ModelLoadError):
        explicit.encode(["一只猫"], lambda texts: np.ones((len(texts), 4), dtype=np.float32))


@pytest.mark.slow
def test_m_clip_loads_from_the_hub_cache_and_answers_chinese_queries(tmp_path: Path, scenes: Path) -> None:
    """A tiny M-CLIP (same classes and file layout as M-CLIP/XLM-Roberta-Large-Vit-B-32, random weights, a
    tokenizer trained here) placed in the Hugging Face cache, loaded offline through the real code path."""
    script = textwrap.dedent(f"""
        import json, os, sys
        import numpy as np, torch, transformers
        from tiny_hf import cache_dir, xlm_roberta_tokenizer

        captions = json.load(open({str(scenes / "captions.json")!r}))
        tokenizer = xlm_roberta_tokenizer([c["en"] + " " + c["zh"] for c in captions.values()] * 20)

        base_config = transformers.XLMRobertaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
            num_attention_heads=2, intermediate_size=64, max_position_embeddings=66, pad_token_id=1)
        base_config.save_pretrained(cache_dir("xlm-roberta-large"))
        torch.manual_seed(0)
        transformer = transformers.XLMRobertaModel(base_config).eval()
        linear = torch.nn.Linear(32, 64)
        mclip = cache_dir("M-CLIP/XLM-Roberta-Large-Vit-B-32")
        json.dump({{"model_type": "M-CLIP", "architectures": ["MultilingualCLIP"], "modelBase": "xlm-roberta-large",
                   "transformerDimensions": 32, "numDims": 64}}, open(os.path.join(mclip, "config.json"), "w"))
        state = {{"transformer." + k: v.contiguous() for k, v in transformer.state_dict().items()}}
        state.update({{"LinearTransformation.weight": linear.weight.detach(), "LinearTransformation.bias": linear.bias.detach()}})
        torch.save(state, os.path.join(mclip, "pytorch_model.bin"))
        tokenizer.save_pretrained(mclip)

        from image_search import ImageSearchEngine
        engine = ImageSearchEngine(model_name="shapes-tiny::v1", milvus_uri={str(tmp_path / "m.db")!r}, device="cpu",
                                   query_model="M-CLIP/XLM-Roberta-Large-Vit-B-32")
        engine.index_directory({str(scenes)!r})
        queries = ["a large red circle", "一个大的红色圆形", "一个小的蓝色星形" * 100]
        results = engine.search_batch(queries, top_k=24)
        # the reference: M-CLIP's published forward (mean over real tokens, then the linear map)
        with torch.inference_mode():
            t = tokenizer(queries[1:2], padding=True, return_tensors="pt")
            hidden = transformer(**t)[0]
            mask = t["attention_mask"].unsqueeze(2)
            expected = linear((hidden * mask).sum(1) / mask.sum(1)).numpy()[0]
        expected /= np.linalg.norm(expected)
        rows = engine.store.get([r.id for r in results[1]], with_vectors=True)
        vectors = {{int(r["id"]): np.asarray(r["vector"]) for r in rows}}
        print(json.dumps({{"encoders": [r[0].query_encoder for r in results],
                          "scores_match": bool(all(abs(r.score - float(vectors[r.id] @ expected)) < 1e-4 for r in results[1])),
                          "counts": [len(r) for r in results],
                          "stats": engine.get_stats()["multilingual_query_encoder"]}}))
        """)
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["encoders"] == ["shapes-tiny::v1", "M-CLIP/XLM-Roberta-Large-Vit-B-32", "M-CLIP/XLM-Roberta-Large-Vit-B-32"]
    assert result["scores_match"] and result["counts"] == [24, 24, 24]  # a very long query is truncated, not an error
    assert result["stats"] == "M-CLIP/XLM-Roberta-Large-Vit-B-32"


@pytest.mark.slow
def test_sentence_transformers_encoder_loads_from_a_folder_and_answers(tmp_path: Path, scenes: Path) -> None:
    """A tiny model of clip-ViT-B-32-multilingual-v1's layout (DistilBERT → mean pooling → Dense to the image
    space), random weights and a tokenizer trained here, saved and loaded as sentence-transformers does."""
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer
    try:  # sentence-transformers >= 5.x; `sentence_transformers.models` is deprecated there
        from sentence_transformers.sentence_transformer import modules as st_models
    except ImportError:
        from sentence_transformers import models as st_models  # type: ignore[no-redef]
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=False)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    corpus = [c["en"] + " " + c["zh"] for c in captions_of(scenes).values()] * 10
    tok.train_from_iterator(corpus, trainers.WordPieceTrainer(vocab_size=200, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tokenizer = transformers.DistilBertTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                                     cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    torch.manual_seed(0)
    base = tmp_path / "distilbert"
    transformers.DistilBertModel(transformers.DistilBertConfig(vocab_size=len(tokenizer), dim=32, n_layers=2, n_heads=2,
                                                               hidden_dim=64, max_position_embeddings=64)).save_pretrained(base)
    tokenizer.save_pretrained(base)
    word = st_models.Transformer(str(base), max_seq_length=32)
    folder = tmp_path / "tiny-clip-multilingual"
    SentenceTransformer(modules=[word, st_models.Pooling(32, pooling_mode="mean"),
                                 st_models.Dense(32, 64, bias=False, activation_function=torch.nn.Identity())]).save(str(folder))

    with ImageSearchEngine(model_name=TEST_MODEL, milvus_uri=str(tmp_path / "st.db"), device="cpu",
                           query_model=str(folder)) as engine:
        engine.index_directory(scenes)
        english, chinese = engine.search_batch(["a red circle", "一个红色圆形" * 30], top_k=3)
        assert english[0].query_encoder == TEST_MODEL and chinese[0].query_encoder == str(folder)
        expected = SentenceTransformer(str(folder), device="cpu").encode(["一个红色圆形" * 30])[0]
        expected = expected / np.linalg.norm(expected)
        vector = np.asarray(engine.store.get([chinese[0].id], with_vectors=True)[0]["vector"])
        assert chinese[0].score == pytest.approx(float(vector @ expected), abs=1e-4)


@pytest.mark.slow
def test_chinese_clip_loads_offline_and_searches(tmp_path: Path, scenes: Path) -> None:
    """CN-CLIP/RN50 as cn_clip builds it (its bundled RN50@RBT3-chinese config, real classes and tokenizer,
    random weights), its checkpoint placed where the hub download puts it, loaded offline by name."""
    script = textwrap.dedent(f"""
        import contextlib, io, json, os, sys, time
        import numpy as np, torch
        from huggingface_hub.constants import HF_HUB_CACHE
        from PIL import Image
        from cn_clip.clip import tokenize
        from cn_clip.clip.utils import create_model, image_transform

        base = os.path.join(HF_HUB_CACHE, "models--OFA-Sys--chinese-clip-rn50")
        snapshot = os.path.join(base, "snapshots", "2" * 40)
        os.makedirs(snapshot); os.makedirs(os.path.join(base, "refs"))
        open(os.path.join(base, "refs", "main"), "w").write("2" * 40)
        torch.manual_seed(0)
        with contextlib.redirect_stdout(io.StringIO()):
            reference = create_model("RN50@RBT3-chinese")  # cn_clip keeps released weights in fp16
        torch.save({{"epoch": 1, "state_dict": reference.state_dict()}}, os.path.join(snapshot, "clip_cn_rn50.pt"))
        reference = reference.float().eval()

        from photoseek.errors import ModelLoadError
        from clip_encoder import CLIPEncoder
        started = time.time()
        try:
            CLIPEncoder(model_name="CN-CLIP/ViT-B-16")
            missing = "loaded?"
        except ModelLoadError as error:
            missing = str(error)
        missing_seconds = time.time() - started
        encoder = CLIPEncoder(model_name="CN-CLIP/RN50", device="cpu", precision="fp32")
        texts = ["一只可爱的猫咪", "猫咪 and a dog 狗狗", "🐱🐶 风景", "（全角标点）！？", "一个大的红色圆形" * 60, "a photo of a cat"]
        with torch.inference_mode():
            expected = reference.encode_text(tokenize(texts, context_length=52)).numpy()
            paths = sorted(p for p in os.listdir({str(scenes)!r}) if p.endswith(".png"))[:4]
            images = [Image.open(os.path.join({str(scenes)!r}, p)).convert("RGB") for p in paths]
            # non-square too, with different colours left and right: a centre crop or a channel swap shows
            images += [Image.merge("RGB", (i.resize((300, 451)).split()[0], i.resize((300, 451)).split()[1],
                                           Image.linear_gradient("L").resize((300, 451)))) for i in images[:2]]
            expected_images = reference.encode_image(torch.stack([image_transform(224)(i) for i in images])).numpy()
        expected /= np.linalg.norm(expected, axis=1, keepdims=True)
        expected_images /= np.linalg.norm(expected_images, axis=1, keepdims=True)
        # the tensors the model sees, compared before any weights can blur a difference
        ours_in = torch.stack([encoder.prepare_image(i) for i in images])
        theirs_in = torch.stack([image_transform(224)(i) for i in images])
        input_diff = float((ours_in - theirs_in).abs().max())
        text_cos = (encoder.encode_texts(texts) * expected).sum(1)
        image_cos = (encoder.encode_images(images) * expected_images).sum(1)
        by_file = CLIPEncoder(model_name="CN-CLIP/RN50::" + os.path.join(snapshot, "clip_cn_rn50.pt"), device="cpu")
        file_cos = float((by_file.encode_texts(texts) * expected).sum(1).min())

        from image_search import ImageSearchEngine
        with ImageSearchEngine(model_name="CN-CLIP/RN50", milvus_uri={str(tmp_path / "cn.db")!r}, device="cpu") as engine:
            summary = engine.index_directory({str(scenes)!r})
            first = engine.search_by_image(os.path.join({str(scenes)!r}, paths[0]), top_k=3)[0]
            hits = engine.search("一只可爱的猫咪", top_k=3)
            stats = engine.get_stats()
        print(json.dumps({{"missing": missing, "missing_seconds": missing_seconds, "dim": encoder.dim,
                          "input_diff": input_diff, "text_cos": float(text_cos.min()), "image_cos": float(image_cos.min()), "file_cos": file_cos,
                          "indexed": summary.indexed, "first": os.path.basename(first.path),
                          "query_encoder": hits[0].query_encoder, "count": len(hits), "model": stats["model"],
                          "stats_dim": stats["dim"]}}))
        """)
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert "OFA-Sys/chinese-clip-vit-base-patch16" in result["missing"] and "CN-CLIP/ViT-B-16::/path/to/" in result["missing"]
    assert result["missing_seconds"] < 10
    assert result["dim"] == 1024 and result["text_cos"] > 0.9999 and result["image_cos"] > 0.9999
    assert result["input_diff"] < 1e-6  # cn_clip's own square resize and normalisation, channel for channel
    assert result["file_cos"] > 0.9999  # CN-CLIP/RN50::/path/to/file.pt names a local checkpoint
    assert result["indexed"] == 24 and result["first"] == "scene_00000.png" and result["count"] == 3
    assert result["query_encoder"] == "CN-CLIP/RN50" and result["model"] == "CN-CLIP/RN50" and result["stats_dim"] == 1024


@pytest.mark.slow
def test_open_clip_xlm_roberta_model_loads_offline_and_reads_chinese(tmp_path: Path, scenes: Path) -> None:
    """`xlm-roberta-base-ViT-B-32::laion5b_s13b_b90k` through open_clip's own loader, offline: the real
    architecture config and classes (ViT-B-32 + an HF XLM-R text tower), a small `xlm-roberta-base` config
    and a tokenizer trained here in its cache entry, random weights where the laion checkpoint goes."""
    script = textwrap.dedent(f"""
        import json, os, sys
        import numpy as np, open_clip, torch, transformers
        from safetensors.torch import save_file
        from tiny_hf import cache_dir, xlm_roberta_tokenizer

        captions = json.load(open({str(scenes / "captions.json")!r}))
        tokenizer = xlm_roberta_tokenizer([c["en"] + " " + c["zh"] for c in captions.values()] * 20)
        hf = cache_dir("xlm-roberta-base")
        transformers.XLMRobertaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                      intermediate_size=64, max_position_embeddings=80, pad_token_id=1).save_pretrained(hf)
        tokenizer.save_pretrained(hf)
        torch.manual_seed(0)
        reference = open_clip.create_model("xlm-roberta-base-ViT-B-32", pretrained=None, pretrained_hf=False).eval()
        weights = cache_dir("laion/CLIP-ViT-B-32-xlm-roberta-base-laion5B-s13B-b90k")
        save_file({{k: v.contiguous() for k, v in reference.state_dict().items()}},
                  os.path.join(weights, "open_clip_model.safetensors"))

        from clip_encoder import CLIPEncoder
        name = "xlm-roberta-base-ViT-B-32::laion5b_s13b_b90k"
        encoder = CLIPEncoder(model_name=name, device="cpu", precision="fp32")
        texts = ["一只可爱的猫咪", "猫咪 and a dog", "🐱 风景！", "一个大的红色圆形" * 100]
        with torch.inference_mode():
            expected = reference.encode_text(open_clip.get_tokenizer("xlm-roberta-base-ViT-B-32")(texts)).numpy()
        expected /= np.linalg.norm(expected, axis=1, keepdims=True)
        from image_search import ImageSearchEngine
        with ImageSearchEngine(model_name=name, milvus_uri={str(tmp_path / "x.db")!r}, device="cpu") as engine:
            engine.index_directory({str(scenes)!r})
            hits = engine.search("一只可爱的猫咪", top_k=5)
        print(json.dumps({{"dim": encoder.dim, "text_cos": float((encoder.encode_texts(texts) * expected).sum(1).min()),
                          "query_encoder": hits[0].query_encoder, "count": len(hits)}}))
        """)
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["dim"] == 512 and result["text_cos"] > 0.9999  # a very long query is truncated, not an error
    # the model reads Chinese itself: no multilingual query encoder in between
    assert result["query_encoder"] == "xlm-roberta-base-ViT-B-32::laion5b_s13b_b90k" and result["count"] == 5
