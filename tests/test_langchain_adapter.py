"""The LangChain adapter streams our model's text and carries our measured usage."""

from __future__ import annotations

from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.prompts import ChatPromptTemplate

from models.fake import ScriptedChatModel
from models.langchain import FirstlineChatModel
from models.types import Usage


def test_invoke_returns_text_and_usage() -> None:
    fake = ScriptedChatModel()
    fake.enqueue("hello there friend")
    llm = FirstlineChatModel(chat_model=fake)
    msg = llm.invoke([SystemMessage("be nice"), HumanMessage("hi")])
    assert msg.content == "hello there friend"
    usage = msg.response_metadata["usage"]
    assert isinstance(usage, Usage) and usage.completion_tokens == 3
    assert [(m.role, m.content) for m in fake.history[0].messages] == [("system", "be nice"), ("user", "hi")]


def test_stream_through_a_prompt_chain() -> None:
    fake = ScriptedChatModel()
    fake.enqueue("a b c")
    chain = ChatPromptTemplate.from_messages([("system", "{sys}"), ("human", "{q}")]) | FirstlineChatModel(
        chat_model=fake, max_tokens=2
    )
    chunks = list(chain.stream({"sys": "S {not a var}", "q": "Q"}))
    text = "".join(str(c.content) for c in chunks)
    assert text == "a b"  # max_tokens passed through
    prompt_tokens = fake.count_tokens(fake.history[0].messages)
    with_usage = [c for c in chunks if c.usage_metadata]
    assert len(with_usage) == 1
    assert with_usage[0].usage_metadata == {
        "input_tokens": prompt_tokens,
        "output_tokens": 2,
        "total_tokens": prompt_tokens + 2,
    }
    assert isinstance(with_usage[0].response_metadata["usage"], Usage)
