"""The sentence encoder in torch: BERT, mean pooling over the attention mask, L2 normalization.

It computes what the ONNX graph of `models.base.bert_onnx` computes, so it is what fine-tuning
trains and what an export is checked against. An encoder directory holds `model.safetensors`
(BERT weights named as `BertModel` names them, without a `bert.` prefix), the BERT
`config.json` and `tokenizer.json`, the layout of the packaged all-MiniLM-L6-v2 and of every
encoder this module saves, so `bert_onnx.build_model` reads either.

torch and transformers are imported here: this module belongs to the training tools, never to the
worker.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import BertConfig, BertModel
from transformers.utils import logging as transformers_logging

#: Files of an encoder directory besides the weights.
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")
WEIGHTS_FILE = "model.safetensors"


def best_device() -> torch.device:
    """CUDA when torch sees a GPU, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class SentenceEncoder(torch.nn.Module):
    """Unit-length sentence embeddings [batch, hidden] from token ids and attention masks."""

    def __init__(self, bert: BertModel) -> None:
        super().__init__()
        self.bert = bert

    @property
    def hidden_size(self) -> int:
        return int(self.bert.config.hidden_size)

    @classmethod
    def from_dir(cls, encoder_dir: Path) -> SentenceEncoder:
        """Load an encoder directory (see the module docstring); fails clearly when files are missing."""
        for name in (WEIGHTS_FILE, "config.json", "tokenizer.json"):
            if not (encoder_dir / name).is_file():
                raise FileNotFoundError(f"encoder directory {encoder_dir} has no {name}")
        # The packaged encoder carries pooler weights the sentence encoder does not use: loading
        # reports them as unexpected, which is noise here.
        verbosity = transformers_logging.get_verbosity()
        transformers_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
        try:
            bert = BertModel.from_pretrained(str(encoder_dir), add_pooling_layer=False, local_files_only=True)
        finally:
            transformers_logging.set_verbosity(verbosity)
        return cls(bert)

    @classmethod
    def from_config(cls, config: BertConfig) -> SentenceEncoder:
        """A randomly initialized encoder (for tests of the training code)."""
        return cls(BertModel(config, add_pooling_layer=False))  # type: ignore[no-untyped-call]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        mean = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(mean, p=2.0, dim=1, eps=1e-12)

    def save(self, out_dir: Path, tokenizer_from: Path) -> Path:
        """Write the encoder directory: weights, BERT config and the tokenizer files of `tokenizer_from`."""
        out_dir.mkdir(parents=True, exist_ok=True)
        state = {name: tensor.detach().cpu().contiguous() for name, tensor in self.bert.state_dict().items()}
        save_file(state, str(out_dir / WEIGHTS_FILE), metadata={"format": "pt"})
        self.bert.config.to_json_file(str(out_dir / "config.json"))
        for name in TOKENIZER_FILES:
            if (tokenizer_from / name).is_file() and tokenizer_from.resolve() != out_dir.resolve():
                shutil.copyfile(tokenizer_from / name, out_dir / name)
        return out_dir
