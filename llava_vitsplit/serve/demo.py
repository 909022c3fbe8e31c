"""``llava-vitsplit demo``: a gradio 6 web chat with one model load shared by every user.

Layout: a messages-format ``Chatbot``, a ``MultimodalTextbox`` (question + optional image upload),
regenerate / clear buttons, sliders for temperature, top-p and max new tokens, and example prompts.
Replies stream token by token. Each browser session keeps its own conversation in ``gr.State``;
an uploaded image starts a new conversation about it (LLaVA-1.5 handles one image per conversation).
Uploads are validated here (not by gradio), so a file that is not an image, is corrupt, or has huge
dimensions produces an explanation in the chat instead of an error. Generation events share one
concurrency group, so at most ``--concurrency`` replies are computed at once and the rest wait in
gradio's queue. Binds to 127.0.0.1 unless ``--public`` is given.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from llava_vitsplit.serve.generation import Conversation, GenerationSettings, stream_reply
from llava_vitsplit.serve.images import DEFAULT_MAX_PIXELS, ImageLoadError, load_image
from llava_vitsplit.serve.loading import DTYPE_CHOICES, LoadedModel, load_model

EXAMPLE_PROMPTS = (
    "Describe this image in detail.",
    "What is unusual about this image?",
    "What objects are in the image, and where are they?",
    "Is there any text in the image? If so, what does it say?",
)
UPLOAD_HINT = "Please upload a PNG, JPEG, WebP, GIF or BMP photo."

ChatHistory = list[dict]


@dataclass
class ChatSession:
    """One browser session: the model-side conversation and the messages shown in the chatbot."""

    conversation: Conversation = field(default_factory=Conversation)
    history: ChatHistory = field(default_factory=list)
    busy: bool = False  # a reply is being streamed for this session


def _settings(temperature: float, top_p: float, max_new_tokens: float) -> GenerationSettings:
    return GenerationSettings(
        max_new_tokens=int(max_new_tokens), temperature=float(temperature), top_p=float(top_p)
    )


class DemoHandlers:
    """The event handlers, bound to one loaded model (shared by all sessions)."""

    def __init__(self, loaded: LoadedModel, max_image_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.loaded = loaded
        self.max_image_pixels = max_image_pixels

    def _stream(self, session: ChatSession, settings: GenerationSettings) -> Iterator[ChatSession]:
        """Stream the reply to the pending user turn; a failed or abandoned reply leaves it pending."""
        session.busy = True
        session.history.append({"role": "assistant", "content": ""})
        reply, done = "", False
        try:
            for chunk in stream_reply(self.loaded, session.conversation, settings):
                reply += chunk
                session.history[-1] = {"role": "assistant", "content": reply}
                yield session
            done = True
        except Exception as exc:  # shown to the user; Regenerate retries, a new message moves on
            session.history[-1] = {
                "role": "assistant",
                "content": f"Generation failed: {type(exc).__name__}: {exc}",
            }
            yield session
        finally:
            session.busy = False
        if done:
            session.conversation.set_reply(reply.strip())
            session.history[-1] = {"role": "assistant", "content": reply.strip()}
            yield session

    def respond(
        self,
        message: dict | None,
        session: ChatSession | None,
        temperature: float,
        top_p: float,
        max_new_tokens: float,
    ) -> Iterator[tuple[ChatHistory, ChatSession, dict]]:
        """Handle one submitted message (text and/or an image upload); streams the reply."""
        session = session if session is not None else ChatSession()
        message = message or {}
        if session.busy:  # this session is still streaming a reply: keep the message in the box
            yield session.history, session, message
            return
        text = (message.get("text") or "").strip()
        files = message.get("files") or []
        cleared = {"text": "", "files": []}
        if files:
            path = files[0] if isinstance(files[0], str) else files[0].get("path")
            try:
                image = load_image(path, max_pixels=self.max_image_pixels, display_name=Path(path).name)
            except ImageLoadError as exc:
                session.history += [
                    {"role": "user", "content": f"(uploaded {Path(path).name})"},
                    {"role": "assistant", "content": f"I could not use that upload: {exc}. {UPLOAD_HINT}"},
                ]
                yield session.history, session, cleared
                return
            session = ChatSession(Conversation(image=image), [{"role": "user", "content": {"path": path}}])
            if not text:
                session.history.append(
                    {"role": "assistant", "content": "Got the image. What would you like to know?"}
                )
                yield session.history, session, cleared
                return
        if not text:
            yield session.history, session, cleared
            return
        try:
            settings = _settings(temperature, top_p, max_new_tokens)
        except ValueError as exc:  # only reachable through the API; the sliders keep values in range
            yield (
                [*session.history, {"role": "assistant", "content": f"Invalid setting: {exc}"}],
                session,
                message,
            )
            return
        turns = session.conversation.turns
        if turns and turns[-1][1] is None:  # the previous reply failed or was abandoned: move on
            turns.pop()
        session.conversation.add_user(text)
        session.history.append({"role": "user", "content": text})
        for updated in self._stream(session, settings):
            yield updated.history, updated, cleared

    def regenerate(
        self, session: ChatSession | None, temperature: float, top_p: float, max_new_tokens: float
    ) -> Iterator[tuple[ChatHistory, ChatSession]]:
        """Generate the last reply again (with the current parameters), or retry a failed one."""
        session = session if session is not None else ChatSession()
        turns = session.conversation.turns
        if session.busy or not turns:
            yield session.history, session
            return
        try:
            settings = _settings(temperature, top_p, max_new_tokens)
        except ValueError as exc:
            yield [*session.history, {"role": "assistant", "content": f"Invalid setting: {exc}"}], session
            return
        turns[-1][1] = None
        while session.history and session.history[-1]["role"] == "assistant":
            session.history.pop()
        for updated in self._stream(session, settings):
            yield updated.history, updated

    @staticmethod
    def clear() -> tuple[ChatHistory, ChatSession, dict]:
        return [], ChatSession(), {"text": "", "files": []}


def build_demo(
    loaded: LoadedModel,
    *,
    title: str = "LLaVA ViT-Split",
    concurrency: int = 1,
    max_image_pixels: int = DEFAULT_MAX_PIXELS,
    defaults: GenerationSettings | None = None,
):
    """The gradio Blocks app (not launched); API names: ``/chat``, ``/regenerate``, ``/clear``."""
    import gradio as gr

    handlers = DemoHandlers(loaded, max_image_pixels)
    defaults = defaults or GenerationSettings(max_new_tokens=512, temperature=0.2, top_p=1.0)
    with gr.Blocks(title=title) as demo:
        gr.Markdown(f"# {title}\nUpload an image and ask about it. A new image starts a new conversation.")
        session = gr.State(ChatSession())
        chatbot = gr.Chatbot(label="Conversation", height=480)
        textbox = gr.MultimodalTextbox(
            placeholder="Ask about the image (attach one with the clip button)",
            file_count="single",
            show_label=False,
        )
        with gr.Row():
            regenerate_btn = gr.Button("Regenerate")
            clear_btn = gr.Button("Clear")
        with gr.Accordion("Generation parameters", open=False):
            temperature = gr.Slider(
                0.0, 1.5, value=defaults.temperature, step=0.05, label="Temperature (0 = greedy)"
            )
            top_p = gr.Slider(0.05, 1.0, value=defaults.top_p or 1.0, step=0.05, label="Top-p")
            max_new_tokens = gr.Slider(1, 2048, value=defaults.max_new_tokens, step=1, label="Max new tokens")
        gr.Examples(
            examples=[[{"text": prompt, "files": []}] for prompt in EXAMPLE_PROMPTS], inputs=[textbox]
        )
        params = [temperature, top_p, max_new_tokens]
        textbox.submit(
            handlers.respond,
            inputs=[textbox, session, *params],
            outputs=[chatbot, session, textbox],
            api_name="chat",
            concurrency_limit=concurrency,
            concurrency_id="generate",
        )
        regenerate_btn.click(
            handlers.regenerate,
            inputs=[session, *params],
            outputs=[chatbot, session],
            api_name="regenerate",
            concurrency_limit=concurrency,
            concurrency_id="generate",
        )
        clear_btn.click(handlers.clear, outputs=[chatbot, session, textbox], api_name="clear", queue=False)
    return demo


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llava-vitsplit demo", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="checkpoint directory (or hub id)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument(
        "--public", action="store_true", help="listen on all interfaces (0.0.0.0), not only 127.0.0.1"
    )
    parser.add_argument("--concurrency", type=int, default=1, help="replies generated at once (others queue)")
    parser.add_argument("--queue-size", type=int, default=64, help="max waiting requests before refusing")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    parser.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES)
    parser.add_argument("--temperature", type=float, default=0.2, help="default of the slider")
    parser.add_argument("--top-p", type=float, default=1.0, help="default of the slider")
    parser.add_argument("--max-new-tokens", type=int, default=512, help="default of the slider")
    parser.add_argument("--max-image-pixels", type=int, default=DEFAULT_MAX_PIXELS)
    parser.add_argument(
        "--max-file-size", default="20mb", help="uploads larger than this are refused by gradio"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.concurrency < 1:
        print("llava-vitsplit demo: --concurrency must be >= 1", file=sys.stderr)
        return 2
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        loaded = load_model(args.model, device=args.device, dtype=args.dtype)
    except (FileNotFoundError, ValueError) as exc:
        print(f"llava-vitsplit demo: {exc}", file=sys.stderr)
        return 2
    print(f"loaded model {args.model} on {loaded.device} ({loaded.dtype})", file=sys.stderr, flush=True)
    defaults = GenerationSettings(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p
    )
    demo = build_demo(
        loaded, concurrency=args.concurrency, max_image_pixels=args.max_image_pixels, defaults=defaults
    )
    demo.queue(max_size=args.queue_size)
    host = "0.0.0.0" if args.public else "127.0.0.1"
    demo.launch(server_name=host, server_port=args.port, max_file_size=args.max_file_size, show_error=False)
    return 0
