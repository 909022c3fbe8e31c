"""``llava-vitsplit demo``: a gradio 6 web chat with one model load shared by every user.

Layout: a messages-format ``Chatbot``, a ``MultimodalTextbox`` (question + optional image upload),
regenerate / stop / clear buttons, sliders for temperature, top-p and max new tokens, and example
prompts. Replies stream token by token. Each browser session keeps its own conversation in ``gr.State``;
uploaded images (one or several per message) join the conversation and go with the message sent with
them, or with the next one (``Conversation.add_image``); Clear starts over.

A submitted message is shown by an unqueued step, then its reply waits in gradio's queue: generation
events share one concurrency group, so at most ``--concurrency`` replies are computed at once. Uploads
are validated here (not by gradio), so a file that is not an image, is corrupt, has too many pixels or is
over ``--max-file-size`` gets an explanation in the chat, and the typed question stays in the box (it is
never sent without its image). A stopped reply stays on screen and in the model's context as far as it
was shown; a stopped message that had not started is withdrawn. Replies come from a
:class:`~llava_vitsplit.serve.chat_engines.ChatEngine` (transformers or vLLM); the command line, which
binds to 127.0.0.1 unless ``--public``, is :mod:`llava_vitsplit.serve.demo_cli`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from llava_vitsplit.serve.chat_engines import ChatEngine
from llava_vitsplit.serve.generation import Conversation, GenerationSettings
from llava_vitsplit.serve.images import DEFAULT_MAX_PIXELS, ImageLoadError, load_image

EXAMPLE_PROMPTS = (
    "Describe this image in detail.",
    "What is unusual about this image?",
    "What objects are in the image, and where are they?",
    "Is there any text in the image? If so, what does it say?",
)
UPLOAD_HINT = "Please upload a PNG, JPEG, WebP, GIF or BMP photo."
IMAGE_TAGS_HINT = "Write one <image> per image sent with this message, or none to put them first."
STILL_ANSWERING = "(Still answering your previous message; send this once it is done, or press Stop.)"
DEFAULT_MAX_FILE_SIZE = "20mb"
# Uploads up to --max-file-size are used; larger ones up to this many times it still reach the handler and
# are refused in the chat with the question kept; beyond it gradio stops the transfer (a toast only), so a
# public demo's disk cannot be filled by one huge upload.
TRANSFER_LIMIT_FACTOR = 10

ChatHistory = list[dict]


@dataclass
class ChatSession:
    """One browser session: the model-side conversation and the messages shown in the chatbot."""

    conversation: Conversation = field(default_factory=Conversation)
    history: ChatHistory = field(default_factory=list)
    busy: bool = False  # a reply is being streamed for this session
    waiting: GenerationSettings | None = None  # settings of the shown message whose reply is queued


def _settings(temperature: float, top_p: float, max_new_tokens: float) -> GenerationSettings:
    return GenerationSettings(
        max_new_tokens=int(max_new_tokens), temperature=float(temperature), top_p=float(top_p)
    )


def parse_file_size(text: str | int) -> int:
    """Bytes in ``"20mb"``-style sizes (units b, kb, mb, gb; powers of 1024) or a plain number."""
    match = re.fullmatch(r"\s*(\d+)\s*([kmg]?b)?\s*", str(text).lower())
    if match is None:
        raise ValueError(f"--max-file-size must look like 20mb or 500kb, got {text!r}")
    return int(match[1]) * 1024 ** ("b", "kb", "mb", "gb").index(match[2] or "b")


def _upload_paths(files: list) -> list[str]:
    return [file if isinstance(file, str) else file.get("path") for file in files]


class DemoHandlers:
    """The event handlers, bound to one chat engine (shared by all sessions).

    A submitted message is handled in two steps: :meth:`add_message` (not queued) shows it at once, and
    :meth:`reply` (queued with the other generations) streams the answer. :meth:`respond` does both in one
    call for API clients. A reply that is stopped stays on screen and is the model's reply as shown.
    """

    def __init__(
        self,
        engine: ChatEngine,
        max_image_pixels: int = DEFAULT_MAX_PIXELS,
        max_file_bytes: int = parse_file_size(DEFAULT_MAX_FILE_SIZE),
    ) -> None:
        self.engine = engine
        self.max_image_pixels = max_image_pixels
        self.max_file_bytes = max_file_bytes

    def _stream(self, session: ChatSession, settings: GenerationSettings) -> Iterator[ChatSession]:
        """Stream the reply to the pending user turn; a failed reply leaves it pending (Regenerate retries)."""
        session.busy = True
        session.history.append({"role": "assistant", "content": ""})
        reply = ""
        try:
            with closing(self.engine.stream(session.conversation, settings)) as chunks:
                for chunk in chunks:
                    reply += chunk
                    session.history[-1] = {"role": "assistant", "content": reply}
                    yield session
        except GeneratorExit:  # stopped or page closed: what was shown is what the model said
            _keep_reply(session, reply)
            raise
        except Exception as exc:  # shown to the user; Regenerate retries, a new message moves on
            session.history[-1] = {
                "role": "assistant",
                "content": f"Generation failed: {type(exc).__name__}: {exc}",
            }
            yield session
        else:
            _keep_reply(session, reply)
            yield session
        finally:
            session.busy = False

    def _add_uploads(self, session: ChatSession, paths: list[str]) -> bool:
        """Add the uploaded images to the conversation, or none of them after explaining a refusal."""
        images = []
        for path in paths:
            name = Path(path).name
            try:
                images.append(
                    load_image(
                        path,
                        max_pixels=self.max_image_pixels,
                        max_bytes=self.max_file_bytes,
                        display_name=name,
                    )
                )
            except ImageLoadError as exc:
                session.history += [
                    {"role": "user", "content": f"(uploaded {name})"},
                    {"role": "assistant", "content": f"I could not use that upload: {exc}. {UPLOAD_HINT}"},
                ]
                return False
        for image, path in zip(images, paths, strict=True):
            session.conversation.add_image(image)
            session.history.append({"role": "user", "content": {"path": path}})
        return True

    def add_message(
        self,
        message: dict | None,
        session: ChatSession | None,
        temperature: float,
        top_p: float,
        max_new_tokens: float,
    ) -> tuple[ChatHistory, ChatSession, dict]:
        """Show a submitted message (text and/or image) at once; its reply waits in :meth:`reply`.

        Whenever the message is not taken (a reply still pending, a refused upload, a bad setting), the
        typed text stays in the box, so nothing is sent without its image and nothing typed is lost.
        """
        session = session if session is not None else ChatSession()
        message = message or {}
        if session.busy or session.waiting is not None:  # the previous reply is not done yet
            return [*session.history, {"role": "assistant", "content": STILL_ANSWERING}], session, message
        raw_text = message.get("text") or ""
        text, files = raw_text.strip(), message.get("files") or []
        try:
            settings = _settings(temperature, top_p, max_new_tokens)
        except ValueError as exc:  # only reachable through the API; the sliders keep values in range
            return (
                [*session.history, {"role": "assistant", "content": f"Invalid setting: {exc}"}],
                session,
                message,
            )
        cleared = {"text": "", "files": []}
        if files:
            if not self._add_uploads(session, _upload_paths(files)):
                return session.history, session, {"text": raw_text, "files": []}
            if not text:
                session.history.append(
                    {"role": "assistant", "content": "Got it. What would you like to know?"}
                )
        if text:
            turns = session.conversation.turns
            if turns and turns[-1][1] is None:  # the previous reply failed: move on
                turns.pop()
            try:
                session.conversation.add_user(text, self.engine.image_token)
            except ValueError as exc:  # <image> tags that do not match the message's images
                reply = {"role": "assistant", "content": f"{exc}. {IMAGE_TAGS_HINT}"}
                return [*session.history, reply], session, {"text": raw_text, "files": []}
            session.history.append({"role": "user", "content": text})
            session.waiting = settings
        return session.history, session, cleared

    def reply(self, session: ChatSession | None) -> Iterator[tuple[ChatHistory, ChatSession]]:
        """Stream the reply to the message :meth:`add_message` showed (nothing when none waits)."""
        session = session if session is not None else ChatSession()
        settings, session.waiting = session.waiting, None
        if settings is None or session.busy:
            yield session.history, session
            return
        with closing(self._stream(session, settings)) as stream:  # a stop reaches _stream at once
            for updated in stream:
                yield updated.history, updated

    def respond(
        self,
        message: dict | None,
        session: ChatSession | None,
        temperature: float,
        top_p: float,
        max_new_tokens: float,
    ) -> Iterator[tuple[ChatHistory, ChatSession, dict]]:
        """Both steps in one call (the ``/chat`` API endpoint): show the message, then stream its reply."""
        history, shown, box = self.add_message(message, session, temperature, top_p, max_new_tokens)
        yield history, shown, box
        if shown.waiting is None:  # not taken, or nothing to answer (an image alone)
            return
        with closing(self.reply(shown)) as replies:
            for history, updated in replies:
                yield history, updated, box

    def regenerate(
        self, session: ChatSession | None, temperature: float, top_p: float, max_new_tokens: float
    ) -> Iterator[tuple[ChatHistory, ChatSession]]:
        """Generate the last reply again (with the current parameters), or retry a failed one."""
        session = session if session is not None else ChatSession()
        turns = session.conversation.turns
        if session.busy or session.waiting is not None or not turns:
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
        with closing(self._stream(session, settings)) as stream:  # a stop reaches _stream at once
            for updated in stream:
                yield updated.history, updated

    @staticmethod
    def stop(session: ChatSession | None) -> tuple[ChatHistory | dict, ChatSession]:
        """The Stop button: a streaming reply is cut where it is and kept as shown (see ``_stream``);
        a message still waiting in the queue is withdrawn from the screen and the conversation."""
        import gradio as gr

        session = session if session is not None else ChatSession()
        if session.busy:  # the chatbot keeps the stream's last update, the text the reply is cut to
            return gr.skip(), session
        if session.waiting is not None:
            session.waiting = None
            session.conversation.turns.pop()
            session.history.pop()
        return session.history, session

    @staticmethod
    def clear() -> tuple[ChatHistory, ChatSession, dict]:
        return [], ChatSession(), {"text": "", "files": []}


def _keep_reply(session: ChatSession, reply: str) -> None:
    """Make ``reply`` the model's answer to the pending turn, in the conversation and on screen."""
    session.conversation.set_reply(reply.strip())
    session.history[-1] = {"role": "assistant", "content": reply.strip()}


def _parameter_sliders(gr, defaults: GenerationSettings) -> list:
    """Temperature, top-p and max-new-tokens sliders (in that order) in a closed accordion."""
    with gr.Accordion("Generation parameters", open=False):
        return [
            gr.Slider(0.0, 1.5, value=defaults.temperature, step=0.05, label="Temperature (0 = greedy)"),
            gr.Slider(0.05, 1.0, value=defaults.top_p or 1.0, step=0.05, label="Top-p"),
            gr.Slider(1, 2048, value=defaults.max_new_tokens, step=1, label="Max new tokens"),
        ]


def _connect(gr, handlers: DemoHandlers, ui: dict, concurrency: int) -> None:
    """The events; generations (message replies, regenerate, the ``/chat`` API) share one queue group."""
    chatbot, session, textbox, params = ui["chatbot"], ui["session"], ui["textbox"], ui["params"]
    generation = {"concurrency_limit": concurrency, "concurrency_id": "generate"}
    # The message is shown by an unqueued step, so a user waiting in the queue sees it at once.
    replying = textbox.submit(
        handlers.add_message,
        inputs=[textbox, session, *params],
        outputs=[chatbot, session, textbox],
        queue=False,
        api_visibility="undocumented",
    ).then(
        handlers.reply,
        inputs=[session],
        outputs=[chatbot, session],
        api_visibility="undocumented",
        **generation,
    )
    gr.on(  # no UI trigger: the two steps above in one API call
        [],
        handlers.respond,
        inputs=[textbox, session, *params],
        outputs=[chatbot, session, textbox],
        api_name="chat",
        **generation,
    )
    regenerating = ui["regenerate"].click(
        handlers.regenerate,
        inputs=[session, *params],
        outputs=[chatbot, session],
        api_name="regenerate",
        **generation,
    )
    ui["stop"].click(
        handlers.stop,
        inputs=[session],
        outputs=[chatbot, session],
        api_name="stop",
        cancels=[replying, regenerating],
        queue=False,
    )
    ui["clear"].click(handlers.clear, outputs=[chatbot, session, textbox], api_name="clear", queue=False)


def build_demo(
    engine: ChatEngine,
    *,
    title: str = "LLaVA ViT-Split",
    concurrency: int = 1,
    max_image_pixels: int = DEFAULT_MAX_PIXELS,
    max_file_bytes: int = parse_file_size(DEFAULT_MAX_FILE_SIZE),
    defaults: GenerationSettings | None = None,
):
    """The gradio Blocks app (not launched); API names: ``/chat``, ``/regenerate``, ``/stop``, ``/clear``."""
    import gradio as gr

    handlers = DemoHandlers(engine, max_image_pixels, max_file_bytes)
    defaults = defaults or GenerationSettings(max_new_tokens=512, temperature=0.2, top_p=1.0)
    with gr.Blocks(title=title) as demo:
        gr.Markdown(f"# {title}\nUpload images and ask about them; Clear starts a new conversation.")
        ui = {
            "session": gr.State(ChatSession()),
            "chatbot": gr.Chatbot(label="Conversation", height=480),
            "textbox": gr.MultimodalTextbox(
                placeholder="Ask about the images (attach one or several with the clip button)",
                file_count="multiple",
                show_label=False,
            ),
        }
        with gr.Row():
            for name in ("regenerate", "stop", "clear"):
                ui[name] = gr.Button(name.capitalize())
        ui["params"] = _parameter_sliders(gr, defaults)
        gr.Examples(
            examples=[[{"text": prompt, "files": []}] for prompt in EXAMPLE_PROMPTS], inputs=[ui["textbox"]]
        )
        _connect(gr, handlers, ui, concurrency)
    return demo
