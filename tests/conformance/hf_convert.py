#!/usr/bin/env python3
"""Runs llama.cpp's own convert_hf_to_gguf.py on a Hugging Face checkpoint
without the `transformers` package, which Debian does not carry: a small
stand-in module answers the converter's two uses of it (AutoConfig, whose
failure makes the converter read config.json itself, and AutoTokenizer,
answered from tokenizer.json). The converter cannot recognise the project's
own synthetic tokenizer by its hash, so its pre-tokenizer name is fixed here;
the weights, hyperparameters and tensor names are the converter's own.
Converters that want a SentencePiece tokenizer.model get the tokenizer.json
route where the checkpoint has none.

usage: hf_convert.py LLAMA_CPP_SOURCE MODEL_DIR OUT.gguf [PRE]
"""
import json
import sys
import types
from pathlib import Path


class _Added:
    def __init__(self, special, normalized):
        self.special = special
        self.normalized = normalized


class StandInTokenizer:
    """The parts of a transformers tokenizer the converter reads."""

    def __init__(self, model_dir):
        tok = json.loads((Path(model_dir) / "tokenizer.json").read_text(encoding="utf-8"))
        self.vocab = dict(tok["model"]["vocab"])
        self._added = {}
        self.added_tokens_decoder = {}
        for a in tok.get("added_tokens", []):
            self.vocab[a["content"]] = a["id"]
            self._added[a["content"]] = a["id"]
            self.added_tokens_decoder[a["id"]] = _Added(a.get("special", False), a.get("normalized", False))
        self._reverse = {i: t for t, i in self.vocab.items()}

    def get_added_vocab(self):
        return dict(self._added)

    def encode(self, text, add_special_tokens=False):
        if text in self.vocab:
            return [self.vocab[text]]
        raise ValueError("stand-in tokenizer: only whole tokens can be encoded")

    def decode(self, ids):
        return "".join(self._reverse[i] for i in ids)


def main():
    src, model_dir, out = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    pre = sys.argv[4] if len(sys.argv) > 4 else "default"
    stand_in = types.ModuleType("transformers")

    class AutoConfig:
        @staticmethod
        def from_pretrained(*args, **kwargs):
            raise OSError("transformers stand-in: read config.json instead")

    class AutoTokenizer:
        @staticmethod
        def from_pretrained(path, **kwargs):
            return StandInTokenizer(path)

    # Debian's torch (1.13) predates the float8 and wide unsigned dtypes the
    # converter names in its dtype tables; placeholders stand in for them
    # (a checkpoint that used them could not load in this torch anyway).
    import torch
    for name in ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz", "uint16", "uint32", "uint64"):
        if not hasattr(torch, name):
            setattr(torch, name, type(name, (), {})())
    try:
        import tqdm  # noqa: F401  (the converter's progress bar)
    except ImportError:
        quiet = types.ModuleType("tqdm")

        class _Bar:
            def __init__(self, *args, **kwargs):
                pass

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

            def update(self, *args):
                pass

            def close(self):
                pass

        quiet.tqdm = _Bar
        sys.modules["tqdm"] = quiet
    stand_in.AutoConfig = AutoConfig
    stand_in.AutoTokenizer = AutoTokenizer
    sys.modules["transformers"] = stand_in
    sys.path.insert(0, str(src))
    sys.path.insert(1, str(src / "gguf-py"))
    import convert_hf_to_gguf  # noqa: E402
    from conversion import base  # noqa: E402

    base.TextModel.get_vocab_base_pre = lambda self, tokenizer: pre
    if not (Path(model_dir) / "tokenizer.model").is_file():
        # converters that insist on a SentencePiece model (Gemma 2) take the tokenizer.json route
        base.TextModel._set_vocab_sentencepiece = lambda self, *args, **kwargs: self._set_vocab_gpt2()
        try:  # Phi-3's converter opens tokenizer.model itself
            from conversion import phi
            phi.Phi3MiniModel.set_vocab = lambda self: self._set_vocab_gpt2()
        except (ImportError, AttributeError):
            pass
    # general.name "llmq-demo": llama.cpp gives a vocabulary whose model name says phi-3 Phi-3's special
    # tokens, which the project's small tokenizer does not have
    sys.argv = ["convert_hf_to_gguf.py", model_dir, "--outfile", out, "--outtype", "f32", "--model-name", "llmq-demo"]
    convert_hf_to_gguf.main()


if __name__ == "__main__":
    main()
