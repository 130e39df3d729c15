"""Chat about an image with TwigVLM in the browser: the answer streams with the twig's accepted drafts in green,
beside it the visual tokens pruning kept and the speed statistics.

    python web_demo.py                                 # the bundled tiny world on http://127.0.0.1:7860
    python web_demo.py --host 0.0.0.0 --port 8000 --base-model checkpoints/llava-v1.5-7b \\
        --twig-block checkpoints/TwigVLM-llava1.5-7b-K2-T3 --twig-K 2    # any family, flags as cli_demo.py

Needs Gradio: pip install -e ".[web]".
"""

from __future__ import annotations

import argparse
import html
import queue
import sys
import threading
from typing import Any, Iterator

from cli_demo import DEMO_IMAGE, WORLD_BASE, Conversation, add_model_arguments, check_model_arguments, load_model
from twigvlm.inference.options import METHODS, STRATEGIES, TwigVLMConfig, budget

QUESTION = "What color is the shape in the center?"
DRAFT_COLOUR = "#15803d"  # accepted drafts (green)
CSS = "#transcript .draft {font-weight: 600} #status .error {color: #b91c1c}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(p)
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--max-new-tokens", type=int, default=256)
    args = p.parse_args(argv)
    check_model_arguments(args, p)
    if not 0 < args.port < 65536:
        p.error(f"--port {args.port}: a port is a number from 1 to 65535")
    return args


def request_config(R: str, pruning: str, strategy: str) -> TwigVLMConfig:
    """The page's choices as a generation config; R 'all' (or pruning 'none') keeps every visual token."""
    try:
        tokens = budget(str(R))
    except argparse.ArgumentTypeError as err:
        raise ValueError(f"R: {err}") from None
    if tokens is None or pruning == "none":
        return TwigVLMConfig(generation_strategy=strategy)
    return TwigVLMConfig(generation_strategy=strategy, pruning=pruning, R=tokens)


def stream_answer(conversation: Conversation, question: str, config: TwigVLMConfig,
                  max_new_tokens: int) -> Iterator[tuple[str, bool] | Any]:
    """Runs the model in a thread; yields each new piece of the answer as (text, drafted), then the
    GenerationOutput. A generation that fails raises its error here."""
    from twigvlm.inference.streaming import SpeculativeTextStreamer

    events: queue.Queue = queue.Queue()
    streamer = SpeculativeTextStreamer(conversation.tokenizer, on_text=lambda text, drafted: events.put(
        ("text", (text, drafted))))

    def run() -> None:
        try:
            events.put(("done", conversation.ask(question, config, streamer, max_new_tokens=max_new_tokens)[1]))
        except Exception as err:  # handed to the page's handler
            events.put(("error", err))

    threading.Thread(target=run, daemon=True).start()
    while True:
        kind, value = events.get()
        if kind == "error":
            raise value
        yield value
        if kind == "done":
            return


def transcript_html(history: list[tuple[str, list[tuple[str, bool]]]], streaming: bool = False) -> str:
    """The conversation, each answer's accepted drafts in green; answers are marked done but the one streaming."""
    rows = []
    for turn, (question, pieces) in enumerate(history):
        done = "" if streaming and turn == len(history) - 1 else " done"
        answer = "".join(f'<span class="draft" style="color:{DRAFT_COLOUR}">{html.escape(text)}</span>' if drafted
                         else html.escape(text) for text, drafted in pieces)
        rows.append(f'<p class="user"><b>USER:</b> {html.escape(question)}</p>'
                    f'<p class="assistant"><b>ASSISTANT:</b> <span class="answer{done}">{answer}</span></p>')
    return f'<div id="transcript">{"".join(rows)}</div>'


def error_html(message: str) -> str:
    return f'<p class="error">{html.escape(message)}</p>'


def stats_html(out: Any) -> str:
    rows = [("tokens generated", out.num_tokens_generated), ("prefill", f"{out.prefill_time:.2f} s"),
            ("decoding", f"{out.decoding_tokens_per_second:.1f} tokens/s"),
            ("overall", f"{out.tokens_per_second:.1f} tokens/s")]
    if out.acceptance_rate is not None:
        rows += [("acceptance", f"{out.acceptance_rate:.0%}"),
                 ("tokens per verify step", f"{out.mean_accepted_length:.2f}")]
    rows += [(f"visual tokens, {group.replace('layers_', 'layers ').replace('_', '-')}", f"{count:g}")
             for group, count in out.visual_tokens_kept.items()]
    cells = "".join(f"<tr><td>{html.escape(name)}</td><td>{value}</td></tr>" for name, value in rows)
    return f'<table id="stats">{cells}</table>'


def build_page(args: argparse.Namespace, tokenizer: Any, model: Any, chat: Any) -> Any:
    import gradio as gr

    from twigvlm.inference.visualize import kept_token_picture

    def ask(image, question, R, pruning, strategy, short_answers, heatmap, state):
        """Yields (transcript, picture, statistics, status, state) as the answer streams."""
        state = state or {"conversation": None, "history": []}
        history = state["history"]
        if image is None or not question.strip():
            yield (transcript_html(history), gr.skip(), gr.skip(),
                   error_html("Upload or pick an image first." if image is None else "Type a question first."), state)
            return
        try:
            config = request_config(R, pruning, strategy)
        except ValueError as err:
            yield transcript_html(history), gr.skip(), gr.skip(), error_html(str(err)), state
            return
        image = image.convert("RGB")
        if state["conversation"] is None:
            state["conversation"] = Conversation(model, tokenizer, chat, image)
        conversation = state["conversation"]
        conversation.short_answers = short_answers
        pieces: list[tuple[str, bool]] = []
        history.append((question, pieces))
        yield transcript_html(history, streaming=True), gr.skip(), "", "", state
        try:
            for event in stream_answer(conversation, question, config, args.max_new_tokens):
                if isinstance(event, tuple):
                    pieces.append(event)
                    yield transcript_html(history, streaming=True), gr.skip(), gr.skip(), "", state
                else:
                    picture = kept_token_picture(conversation.image, event, chat, heatmap=heatmap)
                    yield transcript_html(history), picture, stats_html(event), "", state
        except ValueError as err:  # an impossible budget, a prompt too long...: the turn is dropped
            history.pop()
            yield transcript_html(history), gr.skip(), gr.skip(), error_html(str(err)), state

    def new_chat():
        return transcript_html([]), None, "", "", None

    with gr.Blocks(title="TwigVLM", analytics_enabled=False) as page:
        gr.Markdown("## TwigVLM: twig-guided token pruning and self-speculative decoding\n"
                    f"`{args.base_model}` with twig `{args.twig_block}`. Drafts the base accepted are "
                    f'<span style="color:{DRAFT_COLOUR}">green</span>.')
        state = gr.State(None)
        with gr.Row():
            with gr.Column(scale=1):
                image = gr.Image(value=str(DEMO_IMAGE), type="pil", label="Image", sources=["upload", "clipboard"],
                                 elem_id="image")
                R = gr.Dropdown(["all", "64", "128", "192"], value="128", allow_custom_value=True, elem_id="R",
                                label="R: visual tokens kept per layer, on average (or all)")
                pruning = gr.Radio(list(METHODS), value="twig", label="Pruning", elem_id="pruning")
                strategy = gr.Radio(list(STRATEGIES), value="self_speculative", label="Decoding",
                                    elem_id="strategy")
                short_answers = gr.Checkbox(value=args.base_model == str(WORLD_BASE), elem_id="short-answers",
                                            label="Short answers (LLaVA's 'Answer the question using a single word "
                                                  "or phrase.')")
                heatmap = gr.Checkbox(value=False, label="Heat map of the scores that ranked the tokens",
                                      elem_id="heatmap")
            with gr.Column(scale=2):
                transcript = gr.HTML(transcript_html([]), elem_id="chat")
                status = gr.HTML("", elem_id="status")
                question = gr.Textbox(value=QUESTION, label="Question", elem_id="question", lines=1)
                with gr.Row():
                    send = gr.Button("Ask", variant="primary", elem_id="ask")
                    clear = gr.Button("New chat", elem_id="new-chat")
                gr.Examples([[str(DEMO_IMAGE), QUESTION]], inputs=[image, question], label="The bundled image")
            with gr.Column(scale=1):
                picture = gr.Image(label="Kept visual tokens (pruned ones dimmed)", type="pil", interactive=False,
                                   elem_id="kept")
                stats = gr.HTML("", elem_id="statistics")
        inputs = [image, question, R, pruning, strategy, short_answers, heatmap, state]
        outputs = [transcript, picture, stats, status, state]
        send.click(ask, inputs, outputs)
        question.submit(ask, inputs, outputs)
        clear.click(new_chat, None, outputs)
        image.change(new_chat, None, outputs)  # a new image starts a new conversation
    return page


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        import gradio as gr
    except ImportError:
        sys.exit('error: the web demo needs Gradio: pip install -e ".[web]"')
    tokenizer, model, chat = load_model(args)
    page = build_page(args, tokenizer, model, chat)
    theme = gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["monospace"])  # no web fonts to fetch
    page.queue().launch(server_name=args.host, server_port=args.port, theme=theme, css=CSS, ssr_mode=False,
                        show_error=True, allowed_paths=[str(DEMO_IMAGE.parent)])


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
    except (ValueError, FileNotFoundError, OSError) as err:  # user errors: one line
        sys.exit(f"error: {err}")
