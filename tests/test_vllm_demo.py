"""The demo on vLLM (``demo --engine vllm``): the transformers engine's greedy replies, streamed, stopped,
regenerated, and many users at once (``make test-vllm``; skipped where vLLM is not installed).

Both engines build the prompt from the processor's chat template, so the same conversation (image,
earlier turns) must get the same greedy reply. One tiny checkpoint (LM head_dim 32, what vLLM's CPU
attention needs), one engine of each kind shared by the tests.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image

pytest.importorskip("vllm")

from llava_vitsplit.serve.chat_engines import open_chat_engine  # noqa: E402
from llava_vitsplit.serve.demo import ChatSession, DemoHandlers  # noqa: E402
from llava_vitsplit.serve.generation import Conversation, GenerationSettings  # noqa: E402
from llava_vitsplit.testing.tiny import build_tiny_checkpoint  # noqa: E402

pytestmark = pytest.mark.vllm

COLORS = ("red", "green", "blue", "yellow")
NEW_TOKENS = 8


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    """``(transformers engine, vLLM engine)`` on one tiny checkpoint."""
    path, _, _ = build_tiny_checkpoint(tmp_path_factory.mktemp("demo-vllm"), text_width=64, text_heads=2)
    reference = open_chat_engine("transformers", str(path), device="cpu", dtype="fp32")
    served = open_chat_engine("vllm", str(path), dtype="fp32", enforce_eager=True, max_model_len=512)
    yield reference, served
    served.close()


def reply(engine, conversation: Conversation, settings: GenerationSettings) -> str:
    return "".join(engine.stream(conversation, settings)).strip()


def upload(tmp_path, color: str) -> str:
    path = tmp_path / f"{color}.png"
    Image.new("RGB", (40, 40), color).save(path)
    return str(path)


def final(generator):
    *_, last = list(generator)
    return last


def test_same_greedy_reply_as_transformers_over_two_turns(engines):
    reference, served = engines
    conversation = Conversation(images=[Image.new("RGB", (40, 40), "red")])
    conversation.add_user("What is in the image?")
    for settings in (GenerationSettings(max_new_tokens=NEW_TOKENS),
                     GenerationSettings(max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS)):  # fmt: skip
        expected = reply(reference, conversation, settings)
        assert reply(served, conversation, settings) == expected and expected
    conversation.set_reply(expected)
    conversation.add_user("And the colour?")  # the second turn's prompt holds the first exchange
    settings = GenerationSettings(max_new_tokens=NEW_TOKENS)
    assert reply(served, conversation, settings) == reply(reference, conversation, settings)


def test_demo_streams_stops_and_regenerates_on_vllm(engines, tmp_path):
    reference, served = engines
    handlers = DemoHandlers(served)
    message = {"text": "Describe it.", "files": [upload(tmp_path, "green")]}
    history, session, _ = final(handlers.respond(message, ChatSession(), 0.0, 1.0, NEW_TOKENS))
    full = history[-1]["content"]
    assert full == reply(
        reference, handlers_conversation(session), GenerationSettings(max_new_tokens=NEW_TOKENS)
    )
    history, session = final(handlers.regenerate(session, 0.0, 1.0, NEW_TOKENS))  # greedy: the same again
    assert history[-1]["content"] == full and session.conversation.turns == [["Describe it.", full]]
    stream = handlers.regenerate(session, 0.0, 1.0, NEW_TOKENS)
    for history, _ in stream:
        if history[-1]["role"] == "assistant" and history[-1]["content"]:
            break  # Stop once the reply is on screen
    stream.close()
    shown = session.history[-1]["content"]
    assert full.startswith(shown) and not session.busy and session.conversation.turns[-1][1] == shown


def handlers_conversation(session: ChatSession) -> Conversation:
    """The session's conversation with its last reply pending again (what the reply was generated from)."""
    conversation = Conversation(images=session.conversation.images)
    conversation.add_user(session.conversation.turns[0][0])
    return conversation


def test_many_users_at_once_get_their_own_replies(engines, tmp_path):
    reference, served = engines
    handlers = DemoHandlers(served)
    paths = [upload(tmp_path, color) for color in COLORS]

    def one_user(path: str) -> str:
        message = {"text": "What colour is it?", "files": [path]}
        return final(handlers.respond(message, ChatSession(), 0.0, 1.0, NEW_TOKENS))[0][-1]["content"]

    with ThreadPoolExecutor(max_workers=len(paths)) as pool:
        answers = list(pool.map(one_user, paths, timeout=300))
    expected = []
    for path in paths:
        conversation = Conversation(images=[Image.open(path).convert("RGB")])
        conversation.add_user("What colour is it?")
        expected.append(reply(reference, conversation, GenerationSettings(max_new_tokens=NEW_TOKENS)))
    assert answers == expected
