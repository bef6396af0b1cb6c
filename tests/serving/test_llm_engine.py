"""Our engine arguments on a real vLLM engine, in-process, with a tiny random model made here (no download).

The model is a 2-layer random Llama with a BPE tokenizer trained on a few sentences, so its answers are noise:
these tests check structure (the knobs are accepted, batching works, a too-long prompt is refused and mapped
to OpenAI's ``context_length_exceeded``), not quality. The GPU twin runs the same on CUDA when there is one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster.llm_spec import llm_spec
from cluster.settings import Settings
from serving.llm import error_from
from serving.llm_config import LLMSpec, engine_kwargs, supported_engine_args
from tests.requirements_check import require

pytestmark = [pytest.mark.timeout(300)]

SENTENCES = [
    "The coolant flow to node one dropped and the GPUs heat up.",
    "Raise the fan speed and lower the supply setpoint of the cooling unit.",
    "Drain the node, migrate the jobs, then open a ticket for the facility team.",
    "KV cache pressure means the serving engine preempts requests.",
] * 20
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
MAX_LEN = 256


def make_tiny_model(folder: Path) -> Path:
    """A random 2-layer Llama and a trained BPE tokenizer, saved as a Hugging Face folder."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    special = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    tok.train_from_iterator(SENTENCES, trainers.BpeTrainer(vocab_size=400, special_tokens=special,
                                                           initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="<|im_end|>",
                                   pad_token="</s>")
    fast.chat_template = CHATML
    fast.save_pretrained(folder)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=fast.vocab_size, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=MAX_LEN * 2,
                      bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id, tie_word_embeddings=True)
    LlamaForCausalLM(cfg).to(torch.bfloat16).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require("vllm")
    return make_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


def gpu_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def engine_checks(model: str, spec_json: str) -> dict:
    """Start vLLM in this process with the engine arguments opsloop renders, exercise it, report what it did."""
    import os

    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    os.environ["HF_HUB_OFFLINE"] = "1"
    from vllm import LLM, SamplingParams

    kw, dropped = engine_kwargs(LLMSpec.model_validate_json(spec_json), supported_engine_args())
    kw.pop("disable_log_stats")
    llm = LLM(model=model, distributed_executor_backend="uni", **kw)
    params = SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True)
    conversations = [[{"role": "user", "content": s}] for s in SENTENCES[:8]]
    outs = llm.chat(conversations, params)  # 8 sequences through continuous batching at once
    again = llm.chat(conversations[:1], params)  # the same prefix again: served from the prefix cache
    try:
        llm.chat([[{"role": "user", "content": "cooling " * (MAX_LEN * 2)}]], params)
        too_long = ""
    except Exception as exc:  # noqa: BLE001 - vLLM's class for this differs between versions
        too_long = str(exc)
    return {"dropped": sorted(dropped), "lengths": [len(o.outputs[0].token_ids) for o in outs],
            "repeat_same": list(again[0].outputs[0].token_ids) == list(outs[0].outputs[0].token_ids),
            "too_long": too_long}


def _child(model: str, spec_json: str, queue: object) -> None:
    try:
        queue.put(engine_checks(model, spec_json))  # type: ignore[attr-defined]
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        queue.put({"error": repr(exc)})  # type: ignore[attr-defined]


def run_engine(model: Path, settings: Settings) -> None:
    """The engine in a fresh interpreter (spawn): vLLM's kernel registry is sensitive to what else is loaded."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(str(model), llm_spec(settings).model_dump_json(), queue))
    proc.start()
    out = queue.get(timeout=240)
    proc.join(60)
    assert "error" not in out, out["error"]
    assert set(out["dropped"]) <= {"swap_space", "preemption_mode"}
    assert out["lengths"] == [8] * 8 and out["repeat_same"]
    err = error_from({"error": {"message": out["too_long"], "code": 400}})
    assert out["too_long"] and err.status == 400 and err.code == "context_length_exceeded"


def test_engine_accepts_our_knobs_on_cpu(tiny_model: Path) -> None:
    s = Settings(max_model_len=MAX_LEN, block_size=32, kv_cache_memory_bytes=32 * 1024**2, max_num_seqs=8,
                 max_num_batched_tokens=512, enable_prefix_caching=True, llm_dtype="bfloat16")
    run_engine(tiny_model, s)


@pytest.mark.gpu
@pytest.mark.skipif(not gpu_available(), reason="needs an NVIDIA GPU (CPU twin: test_engine_accepts_our_knobs_on_cpu)")
def test_engine_accepts_our_knobs_on_gpu(tiny_model: Path) -> None:
    s = Settings(accelerator="A100", max_model_len=MAX_LEN, gpu_memory_utilization=0.3, max_num_seqs=8)
    run_engine(tiny_model, s)
