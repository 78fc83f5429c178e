"""lm-evaluation-harness's `LM` answered by instructkit's hf backend (registered as `instructkit`).

A thin translation, as lm-eval's `hf` model (`HFLM`) builds its inputs, so results equal `--model hf`
per sample: `loglikelihood` tokenises with lm-eval's own `TemplateLM` split, truncates from the left
to `max_length + 1` tokens as HFLM does, and hands the token pairs to `HFBackend.loglikelihood_tokens`
(shared few-shot prefix run once, contexts packed into token tries). `loglikelihood_rolling` cuts
each text into lm-eval's own rolling windows (`get_rolling_token_windows` / `make_disjoint_window`)
of `max_length`. `generate_until` encodes each prompt as HFLM's batch encoder does, adds the EOS
text to `until`, and lets the backend decode every row until its own stop string, EOS or
`max_gen_toks`. Greedy decoding matches HFLM's text; sampling (`do_sample`) draws from the backend's
seeded generators, so it is not HFLM's random stream.

lm-eval is imported only when this module is; the command line imports the module lazily.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import suppress
from functools import cache
from typing import Any

from ..errors import InstructkitError
from .backends.base import Backend
from .lm_eval_cache import CachedRequests
from .requests import GenerationRequest

MODEL_NAME = "instructkit"
DEFAULT_BATCH_SIZE = 16
# HFLM options that change what is computed and that this adapter does not implement: refused, not ignored.
REFUSED_ARGS = (
    "parallelize",
    "peft",
    "delta",
    "autogptq",
    "gptqmodel",
    "gguf_file",
    "tp_plan",
    "think_end_token",
    "enable_thinking",
    "softmax_dtype",
    "mixed_precision_dtype",
    "revision",
    "subfolder",
    "truncation",
)
# HFLM options accepted for compatibility that cannot change a result here.
IGNORED_ARGS = ("max_batch_size", "logits_cache", "use_fast_tokenizer")


def lm_from_backend(backend: Backend, **options: Any) -> Any:
    """lm-eval's `LM` over an already-built instructkit backend (the `eval run --lm-eval-tasks` path)."""
    return lm_class()(backend=backend, **options)


def run_lm_eval_tasks(
    lm: Any,
    tasks: Sequence[str],
    *,
    include_path: str | Sequence[str] | None = None,
    task_manager: Any = None,
    limit: int | float | None = None,
    num_fewshot: int | None = None,
    task_num_fewshot: Mapping[str, int] | None = None,
    apply_chat_template: bool | str = False,
    system_instruction: str | None = None,
    fewshot_as_multiturn: bool | None = None,
    gen_kwargs: dict[str, Any] | None = None,
    random_seed: int = 0,
) -> dict[str, Any]:
    """Run lm-eval tasks on `lm` with `simple_evaluate(log_samples=True)`; returns its output, whose
    `samples[task]` holds one dict per request group (doc_id, resps, filtered_resps, metric values).

    `num_fewshot` sets every task's shots as `lm_eval --num_fewshot` does; `task_num_fewshot` sets them
    per task, group or tag name instead (the two together are refused). `fewshot_as_multiturn` unset
    follows `apply_chat_template`, as `lm_eval --apply_chat_template` does."""
    from lm_eval import simple_evaluate

    from ..data.catalog.lm_eval import lm_eval_task_manager

    if task_num_fewshot and num_fewshot is not None:
        raise InstructkitError(
            "give shots per task (task_num_fewshot) or for all tasks (num_fewshot), not both"
        )
    if task_manager is None:
        paths = (
            include_path
            if isinstance(include_path, (list, tuple))
            else [include_path]
            if include_path
            else []
        )
        task_manager = lm_eval_task_manager(paths)
    multiturn = bool(apply_chat_template) if fewshot_as_multiturn is None else fewshot_as_multiturn
    out = simple_evaluate(
        model=lm,
        tasks=load_tasks(task_manager, tasks, task_num_fewshot or {}),
        task_manager=task_manager,
        limit=limit,
        num_fewshot=num_fewshot,
        apply_chat_template=apply_chat_template,
        system_instruction=system_instruction,
        fewshot_as_multiturn=multiturn,
        gen_kwargs=gen_kwargs,
        log_samples=True,
        bootstrap_iters=0,
        random_seed=random_seed,
        numpy_random_seed=random_seed,
        torch_random_seed=random_seed,
        fewshot_random_seed=random_seed,
    )
    if out is None:
        raise InstructkitError("lm-eval returned no results (not the main process?)")
    return out


def load_tasks(task_manager: Any, names: Sequence[str], num_fewshot: Mapping[str, int]) -> list[Any]:
    """lm-eval's task (or group) objects for `names`, each leaf task of `name` set to
    `num_fewshot[name]` shots the way simple_evaluate applies its own `num_fewshot` (`set_config`)."""
    unknown = sorted(set(num_fewshot) - set(names))
    if unknown:
        raise InstructkitError(
            f"num_fewshot given for {', '.join(unknown)}, which is not among the tasks run"
        )
    objects: list[Any] = []
    for name in names:
        loaded = task_manager.load(name)
        leaves = list(loaded["tasks"].values())
        for task in leaves if name in num_fewshot else []:
            _set_num_fewshot(task, name, num_fewshot[name])
        objects += [loaded["groups"][name]] if name in loaded["groups"] else leaves
    return objects


def _set_num_fewshot(task: Any, name: str, shots: int) -> None:
    """A task's shots; refused where its definition fixes 0 (lm-eval would ignore the number silently)."""
    if shots and task.get_config("num_fewshot") == 0:
        raise InstructkitError(
            f"lm-eval task {task.task_name} ({name}:num_fewshot={shots}): its definition fixes num_fewshot=0, "
            "which lm-eval keeps whatever is asked; drop num_fewshot for it"
        )
    task.set_config(key="num_fewshot", value=shots)


@cache
def lm_class() -> type:
    """Define `InstructkitLM` on lm-eval's `TemplateLM` and register it as `instructkit` (once)."""
    try:
        import lm_eval.models  # noqa: F401  (lm-eval fills its registry only while it is empty)
        from lm_eval.api.model import TemplateLM
        from lm_eval.api.registry import register_model
    except ImportError as exc:
        raise InstructkitError(
            "lm-eval's LM needs lm-evaluation-harness: pip install 'instructkit[test]'"
        ) from exc

    @register_model(MODEL_NAME)
    class InstructkitLM(CachedRequests, _LMMethods, TemplateLM):
        """lm-eval `LM` on instructkit's hf backend; takes the `hf` model's usual model_args. With
        `use_cache(RequestCache)` its requests are answered from (and stored in) the request cache."""

    return InstructkitLM


def __getattr__(name: str) -> Any:
    if name == "InstructkitLM":
        return lm_class()
    raise AttributeError(name)


class _LMMethods:
    """The adapter's methods (a mixin, so lm-eval is imported only when the class is defined)."""

    def __init__(
        self,
        pretrained: Any = None,
        backend: Backend | None = None,
        tokenizer: Any = None,
        dtype: str = "auto",
        batch_size: int | str | None = None,
        max_length: int | None = None,
        device: str | None = None,
        trust_remote_code: bool = False,
        add_bos_token: bool | None = None,
        prefix_token_id: int | None = None,
        max_gen_toks: int = 256,
        deterministic: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        _check_args(kwargs)
        if batch_size is not None and not str(batch_size).isdigit():
            raise InstructkitError(
                f"batch_size={batch_size!r}: give a number (no 'auto' on instructkit's LM)"
            )
        if backend is None:
            size = int(batch_size or DEFAULT_BATCH_SIZE)
            options = (dtype, device, trust_remote_code, size, max_length, deterministic)
            backend = _build_backend(pretrained, tokenizer, *options)
        else:
            _check_built(
                backend, pretrained, tokenizer, dtype, device, trust_remote_code, batch_size, deterministic
            )
        if not hasattr(backend, "loglikelihood_tokens") or getattr(backend, "tokenizer", None) is None:
            raise InstructkitError(
                f"lm-eval's LM runs on instructkit's hf backend; {type(backend).__name__} cannot score token ids"
            )
        self.engine = backend
        # lm-eval's TemplateLM encodes pairs by this: seq2seq encodes context and continuation apart
        self.backend = getattr(backend, "model_kind", "causal")
        self.batch_size_per_gpu = backend.batch_size
        self.tokenizer = self.engine.tokenizer
        self.add_bos_token = add_bos_token
        self.custom_prefix_token_id = prefix_token_id
        self._max_gen_toks = int(max_gen_toks)
        self._max_length = int(max_length) if max_length else _resolve_max_length(self.engine)
        if self._max_length > self.engine.max_length:
            raise InstructkitError(
                f"max_length={self._max_length} exceeds the backend's max_length={self.engine.max_length}; "
                "build the backend with the larger limit or pass a smaller max_length"
            )

    # ---- what lm-eval reads ----

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        """The token an empty context (and every rolling window) starts from: HFLM's choice."""
        if self.custom_prefix_token_id is not None:
            return self.custom_prefix_token_id
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else self.tokenizer.eos_token_id

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def max_gen_toks(self) -> int:
        return self._max_gen_toks

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    @property
    def device(self) -> Any:
        return self.engine.device

    @property
    def tokenizer_name(self) -> str:
        return self.tokenizer.name_or_path.replace("/", "__")

    def get_model_info(self) -> dict[str, Any]:
        """What lm-eval records about the model in its results' config."""
        model = self.engine.model
        return {
            "model_num_parameters": sum(p.numel() for p in model.parameters()),
            "model_dtype": str(next(model.parameters()).dtype),
            "instructkit_backend": type(self.engine).__name__,
        }

    # ---- tokenisation, as HFLM ----

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        """HFLM.tok_encode: special tokens per `add_special_tokens`, else `add_bos_token`, else the
        tokenizer's default; none when the text already starts with the prefix token's text."""
        special = _special_kwargs(add_special_tokens, self.add_bos_token)
        if add_special_tokens is None and string.startswith(self.tokenizer.decode(self.prefix_token_id)):
            special["add_special_tokens"] = False
        return self.tokenizer.encode(string, **special)

    def tok_decode(self, tokens: Any, skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=skip_special_tokens)

    def _prompt_ids(self, context: str) -> list[int]:
        """HFLM.tok_batch_encode for one prompt (no special tokens when it starts with BOS text)."""
        bos = getattr(self.tokenizer, "bos_token", None)
        if bos and context.startswith(bos):
            special = {"add_special_tokens": False}
        else:
            special = _special_kwargs(None, self.add_bos_token)
        return self.tokenizer(context, **special)["input_ids"]

    def apply_chat_template(
        self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True
    ) -> str:
        """HFLM.apply_chat_template: the tokenizer's template; a template that rejects the system role
        is retried without it."""
        import jinja2

        options = {
            "tokenize": False,
            "add_generation_prompt": add_generation_prompt,
            "continue_final_message": not add_generation_prompt,
        }
        try:
            return self.tokenizer.apply_chat_template(chat_history, **options)
        except jinja2.exceptions.TemplateError:
            turns = [m for m in chat_history if m["role"] != "system"]
            return self.tokenizer.apply_chat_template(turns, **options)

    # ---- the three request kinds ----

    def _loglikelihood_tokens(
        self, requests: list[tuple[Any, list[int], list[int]]], disable_tqdm: bool = False, **kwargs: Any
    ) -> list[tuple[float, bool]]:
        """Token pairs truncated from the left to `max_length + 1` tokens (HFLM), scored by the backend."""
        pairs = [self._truncate(ctx, cont) for _, ctx, cont in requests]
        answers = [(r.logprob, r.is_greedy) for r in self.engine.loglikelihood_tokens(pairs)]
        for (string, _, _), answer in zip(requests, answers):
            if string is not None:
                self.cache_hook.add_partial("loglikelihood", string, answer)
        return answers

    def _truncate(self, context: list[int], continuation: list[int]) -> tuple[list[int], list[int]]:
        if not continuation or len(continuation) > self.max_length:
            raise InstructkitError(
                f"a continuation of {len(continuation)} tokens cannot be scored within max_length={self.max_length}"
            )
        if self.backend == "seq2seq":  # HFLM: encoder input and decoder target each keep max_length
            return context[-self.max_length :], continuation
        kept = (context + continuation)[-(self.max_length + 1) :]
        return kept[: len(kept) - len(continuation)], continuation

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        """Each text's log-likelihood over lm-eval's disjoint rolling windows of `max_length` tokens."""
        from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

        windows: list[tuple[None, list[int], list[int]]] = []
        counts = []
        for (string,) in (req.args for req in requests):
            rolling = get_rolling_token_windows(
                token_list=self.tok_encode(string),
                prefix_token=self.prefix_token_id,
                max_seq_len=self.max_length,
                context_len=1,
            )
            pieces = [make_disjoint_window(w) for w in rolling]
            windows += [(None, ctx, cont) for ctx, cont in pieces]
            counts.append(len(pieces))
        scores = [logprob for logprob, _ in self._loglikelihood_tokens(windows)]
        totals, start = [], 0
        for req, count in zip(requests, counts):
            totals.append(sum(scores[start : start + count]))
            start += count
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, totals[-1])
        return totals

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        """Decode every request in one backend call: each row stops at its own `until`, EOS or limit."""
        eos = self.tok_decode(self.eot_token_id, skip_special_tokens=False)
        calls = [
            self._generation_request(context, gen_kwargs, eos, seed=i)
            for i, (context, gen_kwargs) in enumerate(r.args for r in requests)
        ]
        texts = [samples[0].text for samples in self.engine.generate(calls)]
        for req, text in zip(requests, texts):
            self.cache_hook.add_partial("generate_until", req.args, text)
        return texts

    def _generation_request(
        self, context: str, gen_kwargs: dict[str, Any], eos: str, seed: int
    ) -> GenerationRequest:
        """HFLM's reading of gen_kwargs (until + EOS text, max_gen_toks, do_sample/temperature). `seed`
        is the request's position, so lm-eval's repeats of one request draw different samples."""
        from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs

        kwargs = normalize_gen_kwargs(gen_kwargs, self.max_gen_toks)
        until = handle_stop_sequences(kwargs.pop("until", None), eos=eos)
        max_gen_toks = kwargs.pop("max_gen_toks")
        do_sample, temperature = kwargs.pop("do_sample", False), float(kwargs.pop("temperature", 0.0) or 0.0)
        if kwargs:
            raise InstructkitError(
                f"generation kwargs {sorted(kwargs)} are not supported by instructkit's LM "
                "(supported: until, max_gen_toks, do_sample, temperature)"
            )
        if do_sample and temperature <= 0:
            raise InstructkitError("do_sample=True needs temperature > 0")
        # HFLM: an encoder input has the whole max_length; a causal prompt leaves room for the reply
        max_ctx_len = self.max_length if self.backend == "seq2seq" else self.max_length - max_gen_toks
        if max_ctx_len <= 0:
            raise InstructkitError(f"max_gen_toks={max_gen_toks} must be below max_length={self.max_length}")
        ids = self._prompt_ids(context)[-max_ctx_len:]
        return GenerationRequest(
            context,
            tuple(until),
            max_gen_toks,
            temperature=temperature if do_sample else 0.0,
            seed=seed,
            prompt_ids=tuple(ids),
        )


def _check_args(kwargs: dict[str, Any]) -> None:
    """Refuse HFLM options this adapter does not implement; drop those that cannot matter here."""
    refused = sorted(k for k, v in kwargs.items() if k in REFUSED_ARGS and v not in (None, False, "", "main"))
    unknown = sorted(k for k in kwargs if k not in REFUSED_ARGS and k not in IGNORED_ARGS)
    if refused or unknown:
        raise InstructkitError(
            f"model_args {refused + unknown} are not supported by instructkit's LM (supported: pretrained, "
            "tokenizer, dtype, batch_size, max_length, device, trust_remote_code, add_bos_token, "
            "prefix_token_id, max_gen_toks, deterministic)"
        )


def _check_built(backend: Backend, *loading: Any) -> None:
    """An already-built backend carries its own model, tokenizer, dtype, device and batch size."""
    pretrained, tokenizer, dtype, device, trust_remote_code, batch_size, deterministic = loading
    same_size = batch_size is None or int(batch_size) == getattr(backend, "batch_size", None)
    same_mode = deterministic == getattr(backend, "deterministic", False)
    if pretrained is not None or tokenizer is not None or device or trust_remote_code or not same_size:
        raise InstructkitError(
            "backend= is already built: give pretrained, tokenizer, device, trust_remote_code and "
            "batch_size to the backend, not to the LM"
        )
    if str(dtype) != "auto" or not same_mode:
        raise InstructkitError("backend= is already built: its dtype and deterministic mode are its own")


def _special_kwargs(add_special_tokens: bool | None, add_bos: bool | None) -> dict[str, bool]:
    if add_special_tokens is not None:
        return {"add_special_tokens": add_special_tokens}
    return {"add_special_tokens": add_bos} if add_bos is not None else {}


def _resolve_max_length(engine: Any) -> int:
    """HFLM's default context limit: the config's positions, else the tokenizer's, else 2048."""
    from lm_eval.models.utils import resolve_max_length

    return resolve_max_length(engine.model.config, engine.tokenizer, default=2048)


def _build_backend(
    pretrained: Any,
    tokenizer: Any,
    dtype: str,
    device: str | None,
    trust_remote_code: bool,
    batch_size: int,
    max_length: int | None,
    deterministic: bool,
) -> Backend:
    """An hf backend for `pretrained` (a path, hub id or loaded transformers model), loaded the one
    way instructkit loads models."""
    from ..models.loading import load_causal_lm, load_tokenizer
    from .backends.load import load_backend

    if pretrained is None:
        raise InstructkitError("instructkit's LM needs pretrained=<model> or backend=<instructkit backend>")
    options = {"batch_size": batch_size, "max_model_len": max_length, "deterministic": deterministic}
    if isinstance(pretrained, str) and tokenizer is None and not trust_remote_code:
        extra = {"device": device} if device else {}
        return load_backend("hf", pretrained, dtype=str(dtype), **options, **extra)
    model = pretrained
    if isinstance(pretrained, str):
        import torch

        torch_dtype = getattr(torch, str(dtype)) if str(dtype) not in ("auto", "None") else "auto"
        model = load_causal_lm(pretrained, trust_remote_code=trust_remote_code, dtype=torch_dtype).eval()
        if device:
            model = model.to(device)
    tok = tokenizer if tokenizer is not None and not isinstance(tokenizer, str) else None
    if tok is None:
        name = tokenizer if isinstance(tokenizer, str) else getattr(model, "name_or_path", None)
        tok = load_tokenizer(str(name), trust_remote_code=trust_remote_code)
    return load_backend("hf", model, tokenizer=tok, **options)


with suppress(InstructkitError):  # registered as `instructkit` on import, where lm-eval is installed
    lm_class()
