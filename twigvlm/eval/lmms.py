"""TwigVLM as an lmms-eval model (`pip install -e ".[lmms]"`): registered as `twigvlm` through the entry point group
`lmms_eval.models` (pyproject.toml, `twigvlm.eval.lmms_plugin`), for both model families.

    python -m lmms_eval --model twigvlm --model_args pretrained=PATH,twig=PATH,R=64,pruning=twig,strategy=self_speculative \\
        --tasks TASK [--include_path twigvlm/eval/lmms_tasks] [--batch_size 1]
    accelerate launch --num_processes 4 -m lmms_eval --model twigvlm ...   # one GPU per process

model_args: pretrained (a LLaVA-1.5 or Qwen2.5-VL folder), twig, R (visual tokens kept per layer, or all) or
retain_ratio, pruning (twig|fastv|random|none), strategy (self_speculative|autoregressive), twig_K (twigs in the public
format), conv_mode (LLaVA's template, vicuna_v1 as the eval scripts), device, dtype, attn_implementation. They mean
what the answer generators' flags mean (`twigvlm.eval.answering`) and are checked the same way, before any weights
are read.

generate_until follows the task's generation kwargs: max_new_tokens, temperature (0: greedy), do_sample, top_p, and
`until` (the answer is cut before the first stop string; decoding itself stops at the chat format's end tokens or
max_new_tokens). loglikelihood returns -log p(continuation | context) per request (lmms-eval's multiple_choice picks
the smallest), from the base's forward with every visual token: it refuses a pruning budget, as pruned scoring is not
implemented. Each answer's statistics (tokens/s, acceptance, visual tokens kept) go to lmms-eval's throughput log
(`results["throughput"]`) and are summarised per process at the end of generate_until.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
from accelerate import Accelerator
from loguru import logger
from lmms_eval.api.instance import GenerationResult, Instance, TokenCounts
from lmms_eval.api.model import lmms
from lmms_eval.models.model_utils.gen_metrics import log_metrics

from twigvlm.constants import DEFAULT_IMAGE_TOKEN
from twigvlm.eval.answering import first_turn
from twigvlm.eval.speed import summarize
from twigvlm.eval.table import format_table
from twigvlm.inference.builder import check_budget, load_pretrained_model
from twigvlm.inference.options import TwigVLMConfig, add_generation_arguments, generation_config
from twigvlm.inference.pruning import PruningError
from twigvlm.mm_utils import get_model_name_from_path
from twigvlm.model.family import CheckpointError


class _ModelArgsParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        raise SystemExit(f"error: --model_args: {message} (model_args R= is -R, strategy= is --generation-strategy)")


class TwigVLMLmms(lmms):
    """One model per process; lmms-eval gives each process its share of the requests (rank, world_size)."""

    def __init__(self, pretrained: str, twig: str | None = None, R: Any = None, retain_ratio: Any = None,
                 pruning: str | None = None, strategy: str | None = None, twig_K: int | None = None,
                 conv_mode: str = "vicuna_v1", device: str | None = None, dtype: str | None = None,
                 attn_implementation: str = "sdpa", batch_size: Any = 1, **unknown: Any) -> None:
        super().__init__()
        if unknown:
            raise SystemExit(f"error: --model_args: unknown key(s) {sorted(unknown)}; known: pretrained, twig, R, "
                             "retain_ratio, pruning, strategy, twig_K, conv_mode, device, dtype, attn_implementation")
        if int(batch_size) != 1:
            raise SystemExit(f"error: --batch_size {batch_size}: twigvlm decodes one sample at a time; use "
                             "--batch_size 1 (and accelerate launch for several GPUs)")
        self.generation = self._generation_config(twig, R, retain_ratio, pruning, strategy, twig_K)
        self.accelerator = Accelerator()
        if self.accelerator.num_processes > 1:  # data parallel: this process's GPU (cuda:<local rank>)
            device = str(self.accelerator.device)
        self._rank, self._world_size = self.accelerator.process_index, self.accelerator.num_processes
        try:
            check_budget(pretrained, twig, twig_K, self.generation)
            self.tokenizer, self.model, processor, _ = load_pretrained_model(
                pretrained, device=device, torch_type=dtype, attn_implementation=attn_implementation, twig=twig,
                twig_K=twig_K)
        except (PruningError, CheckpointError, FileNotFoundError, ValueError) as err:
            raise SystemExit(f"error: {err}") from None
        self.chat = self.model.chat_format(self.tokenizer, processor, conv_mode)
        self.model_name = get_model_name_from_path(str(pretrained))
        self.speed: list[dict[str, Any]] = []  # each answer's statistics, this process

    @property
    def device(self) -> torch.device:
        """Where this process's model runs (lmms-eval gathers its processes' results there)."""
        return self.model.device

    @staticmethod
    def _generation_config(twig: str | None, R: Any, retain_ratio: Any, pruning: str | None, strategy: str | None,
                           twig_K: int | None) -> TwigVLMConfig:
        """The answer generators' flags, checked by their own parser."""
        parser = _ModelArgsParser(prog="twigvlm")
        add_generation_arguments(parser)
        given = {"-R": R, "--retain-ratio": retain_ratio, "--pruning": pruning, "--generation-strategy": strategy}
        args = parser.parse_args([part for flag, value in given.items() if value is not None
                                  for part in (flag, str(value))])
        return generation_config(args, parser, has_twig=twig is not None, twig_K=twig_K)

    # --- prompts ---------------------------------------------------------------------------------------------------
    def _inputs(self, context: str, doc_to_visual: Any, doc_id: int, task: str, split: str) -> dict[str, Any]:
        """The context as the user's turn, in the family's chat format, the doc's images first unless the context
        places them itself."""
        images = [v for v in (doc_to_visual(self.task_dict[task][split][doc_id]) or []) if v is not None]
        if DEFAULT_IMAGE_TOKEN in context:
            turns = [{"from": "human", "value": context}]
        else:
            turns = first_turn(context, len(images))
        return self.chat.generation_inputs(turns, images)

    # --- lmms-eval's interface -------------------------------------------------------------------------------------
    def generate_until(self, requests: list[Instance]) -> list[GenerationResult]:
        answers = []
        for request in requests:
            context, gen_kwargs, doc_to_visual, doc_id, task, split = request.args
            gen_kwargs = dict(gen_kwargs)
            until = gen_kwargs.pop("until", None) or []
            until = [until] if isinstance(until, str) else list(until)
            temperature = float(gen_kwargs.get("temperature") or 0)
            try:
                output = self.model.generate(
                    **self._inputs(context, doc_to_visual, doc_id, task, split),
                    do_sample=bool(gen_kwargs.get("do_sample", temperature > 0)) and temperature > 0,
                    temperature=temperature, top_p=gen_kwargs.get("top_p"),
                    max_new_tokens=int(gen_kwargs.get("max_new_tokens") or 1024),
                    num_beams=int(gen_kwargs.get("num_beams") or 1), eos_token_id=self.chat.stop_token_ids,
                    twigvlm_config=self.generation.to_dict())
            except PruningError as err:  # an R this image's visual tokens cannot give (Qwen: V differs per image)
                raise SystemExit(f"error: {task} document {doc_id}: {err}") from None
            text = self.tokenizer.batch_decode(output.predicted_tokens, skip_special_tokens=True)[0]
            text = cut_at_stop_strings(text, until).strip()
            answers.append(GenerationResult(text, TokenCounts(output_tokens=output.num_tokens_generated)))
            self._log_speed(output.metadata())
            self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
        self._log_speed_summary()
        return answers

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        if self.generation.pruning != "none":
            raise SystemExit(f"error: loglikelihood (tasks with output_type loglikelihood or multiple_choice) scores "
                             f"with every visual token; pruning={self.generation.pruning} is not implemented for it: "
                             f"run these tasks with pruning=none")
        scores = []
        for request in requests:
            context, target, doc_to_visual, doc_id, task, split = request.args
            continuation = target if isinstance(target, str) else target(self.task_dict[task][split][doc_id])
            inputs = self._inputs(context, doc_to_visual, doc_id, task, split)
            answer = self.tokenizer(continuation, add_special_tokens=False, return_tensors="pt").input_ids  # [1, C]
            scores.append(continuation_nll(self.model, inputs, answer))
        return scores

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise SystemExit("error: twigvlm answers single-round tasks (generate_until); multi-round tasks are not "
                         "supported")

    # --- speed -----------------------------------------------------------------------------------------------------
    def _log_speed(self, metadata: dict[str, Any]) -> None:
        """One answer's statistics, in lmms-eval's throughput log (summed and averaged into its results)."""
        self.speed.append(metadata)
        extra = {"acceptance_rate": metadata["acceptance_rate"], "mean_accepted_length":
                 metadata["mean_accepted_length"], "visual_tokens_kept": metadata["visual_tokens_kept"].get("average"),
                 "decoding_tokens_per_second": metadata["decoding_tokens_per_second"]}
        log_metrics(total_elapsed_time=metadata["prefill_time"] + metadata["decoding_time"],
                    total_gen_tokens=metadata["num_tokens_generated"], avg_speed=metadata["tokens_per_second"],
                    additional_metrics={k: v for k, v in extra.items() if v is not None})

    def _log_speed_summary(self) -> None:
        summary = summarize(self.speed)
        if summary:
            table = format_table(["speed", "value"], list(summary.items()), digits=3)
            logger.info(f"twigvlm {self.model_name} (rank {self.rank}), "
                        f"{self.generation.generation_strategy}, pruning {self.generation.pruning}:\n{table}")


def cut_at_stop_strings(text: str, until: list[str]) -> str:
    """`text` up to the first occurrence of any stop string."""
    return text[:min((text.find(stop) for stop in until if stop and stop in text), default=len(text))]


@torch.no_grad()
def continuation_nll(model: Any, inputs: dict[str, Any], answer: torch.Tensor) -> tuple[float, bool]:
    """(-log p(answer | prompt), whether greedy decoding would give the answer): one forward of prompt + answer."""
    inputs = {**inputs, "input_ids": torch.cat([inputs["input_ids"], answer], dim=1)}
    if inputs.get("attention_mask") is not None:
        inputs["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones_like(answer)], dim=1)
    inputs = {k: v.to(model.device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
    logits = model(**inputs).logits[0, -answer.shape[1] - 1:-1].float()  # [C, vocab]: the answer's predictions
    answer = answer[0].to(logits.device)
    logprobs = torch.log_softmax(logits, dim=-1).gather(1, answer[:, None])[:, 0]  # [C]
    return -logprobs.sum().item(), bool((logits.argmax(dim=-1) == answer).all())
