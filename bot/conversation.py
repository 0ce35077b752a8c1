"""Bot: the one orchestration point for a customer message.

`stream_message` stores the customer's text, writes a `started` ledger row, lets the router decide
(rules, retrieval, FAQ), and then answers from the FAQ without generation, asks one clarifying question,
hands the conversation to a human (ticket), or streams a model answer built from the retrieved passages
through LangChain. While a human owns the conversation the bot stays silent and the message goes to the
ticket. A model failure or timeout escalates instead of vanishing. `handle_message` is the same path,
collected.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import cast

from langchain_core.messages import AIMessage, BaseMessage, BaseMessageChunk, HumanMessage

from bot import escalation, prompts
from bot.answering import ANSWER_REJECTED, AnswerModes
from bot.conversation_store import ConversationStore, check_conversation_id
from bot.errors import BotError, InputError
from bot.kb.search import KnowledgeBase, KnowledgeSettings
from bot.language import detect_language
from bot.privacy import mask_payment_data, normalize_text
from bot.router import CLARIFY_ROUTE, Decision, Router, _asked_to_clarify
from bot.safety import sanitize_answer
from bot.settings import BotSettings
from bot.tickets import JOINED_ROUTE, TicketStore
from bot.types import Delta, Lang, Message, Reply, Source
from models.errors import ModelError
from models.langchain import FirstlineChatModel, to_chat_messages
from models.types import ChatMessage, ChatModel, Generation, Usage
from usage.budgets import BudgetGuard, Step
from usage.ledger import Ledger, Measurement, Tracked

log = logging.getLogger(__name__)

# Tokens kept free besides the answer budget: chat-template overhead differs slightly between
# counting and generation (generation prompt, BOS), so never plan to the last token.
SAFETY_TOKENS = 8
PASSAGE_CHARS = 900
ACK_ROUTE = "ack"  # messages.route of "your message went to the ticket" notices
PARTIAL_ROUTE = "partial"  # messages.route of an answer cut off by a failure or a cancel


class Bot:
    """Answers customer messages; every request goes through the ledger."""

    def __init__(
        self,
        *,
        model: ChatModel,
        store: ConversationStore,
        ledger: Ledger,
        settings: BotSettings | None = None,
        max_tokens: int = 256,
        knowledge: KnowledgeBase | None = None,
        knowledge_settings: KnowledgeSettings | None = None,
        tickets: TicketStore | None = None,
        budget: BudgetGuard | None = None,
    ) -> None:
        self.model = model
        self.store = store
        self.ledger = ledger
        self.settings = settings or BotSettings()
        self.max_tokens = max_tokens  # reserved for, and at most spent on, one answer
        self.knowledge = knowledge
        self.tickets = tickets or TicketStore(store.path, conversations=store)
        self.router = Router(knowledge, self.settings, knowledge_settings)
        self.budget = budget
        self.llm = FirstlineChatModel(chat_model=model)
        self.answers = AnswerModes(
            self.settings.answer_mode,
            knowledge,
            guard=self.settings.grounding_guard,
            min_overlap=self.settings.grounding_min_overlap,
            min_similarity=self.settings.grounding_min_similarity,
        )

    # -- public API --------------------------------------------------------------------------------
    def handle_message(self, conversation_id: str, text: str, lang: Lang | None = None) -> Reply:
        """Answer one customer message (not streamed)."""
        reply: Reply | None = None
        for event in self.stream_message(conversation_id, text, lang):
            if isinstance(event, Reply):
                reply = event
        assert reply is not None
        return reply

    def stream_message(self, conversation_id: str, text: str, lang: Lang | None = None) -> Iterator[Delta | Reply]:
        """Answer one customer message, yielding Delta pieces and finally the Reply."""
        known = self.store.get(check_conversation_id(conversation_id))
        previous_lang: Lang = (known or {}).get("lang") or self.settings.default_language  # type: ignore[assignment]
        text = self.clean_input(text, previous_lang)  # refused input leaves no row behind, not even the conversation
        conv = known or self.store.ensure(conversation_id)
        lang = lang or detect_language(text, fallback=previous_lang)
        if conv.get("lang") != lang:
            self.store.set_fields(conversation_id, lang=lang)
        history = self.store.messages(conversation_id, limit=self.settings.history_messages)
        if conv.get("status") == "human":
            yield self._to_staff(conversation_id, text, lang)
            return
        self.store.add_message(conversation_id, "user", text, lang=lang)
        outcome: Reply | _Escalation
        # the row is finished when this block ends: before the final Reply is handed out (see Ledger.track)
        with self.ledger.track(conversation_id=conversation_id, route="model") as req:
            step = self.budget.status().step if self.budget is not None else Step.normal
            decision = _degrade(self.router.decide(text, lang, history), step)
            if (
                decision.ask_model
                and self.settings.ask_model_when_unsure
                and getattr(self.model, "supports_grammar", True)  # else the rules decide (served engines)
                and self._model_says_escalate(conversation_id, text)
            ):
                decision = Decision("human", escalation.MODEL_DECISION, sources=decision.sources)
            req.measurement = Measurement(retrieval_s=decision.retrieval_s)
            rid, compute_s = req.request_id, req.measurement.compute_s
            if decision.kind == "human":
                req.route = "human"
                outcome = _Escalation(decision.reason, decision.sources)
            elif decision.kind == "faq":
                assert decision.faq is not None
                req.route = "faq"
                answer = decision.faq.answer
                self.store.add_message(conversation_id, "assistant", answer, lang=lang, request_id=rid, route="faq",
                                       sources=decision.sources)  # fmt: skip
                outcome = Reply(answer, "faq", conversation_id, rid, lang, decision.sources, None, compute_s,
                                "faq_match")  # fmt: skip
            elif decision.kind == "clarify":
                req.route = "faq"
                answer = prompts.CLARIFY[lang]
                self.store.add_message(conversation_id, "assistant", answer, lang=lang, request_id=rid,
                                       route=CLARIFY_ROUTE)  # fmt: skip
                outcome = Reply(answer, "faq", conversation_id, rid, lang, (), None, compute_s, "clarify")
            elif not self.answers.generates:
                req.route = "faq"  # quoted from the knowledge base: no model call
                outcome = self._quote(conversation_id, req, text, lang, decision, "extractive") or self._ask_back(
                    conversation_id, req, lang, history, decision, "clarify:no_extract", escalation.NO_KB_MATCH
                )
            else:
                max_tokens = self.max_tokens if step < Step.short_answers else max(32, self.max_tokens // 4)
                outcome = yield from self._answer_with_model(conversation_id, req, text, lang, history, decision,
                                                             max_tokens)  # fmt: skip
            if req.reason is None:
                req.reason = outcome.reason
        if isinstance(outcome, _Escalation):
            yield self._escalate(conversation_id, rid, text, lang, history, outcome.reason, outcome.sources)
        else:
            yield outcome

    def clean_input(self, text: str, lang: Lang) -> str:
        """Normalise the customer's text; raise InputError (customer-facing) when it cannot be used."""
        limit = self.settings.max_input_chars
        if len(text or "") > 4 * limit:  # refuse before doing any work on a flood
            raise InputError(prompts.TOO_LONG[lang].format(n=len(text), limit=limit))
        text = normalize_text(text or "")
        if not text:
            raise InputError(prompts.EMPTY_INPUT[lang])
        if len(text) > limit:
            raise InputError(prompts.TOO_LONG[lang].format(n=len(text), limit=limit))
        return mask_payment_data(text)

    def request_human(self, conversation_id: str, lang: Lang | None = None) -> Reply:
        """The customer pressed "talk to a person": escalate without a question."""
        conv = self.store.ensure(conversation_id, lang)  # a new conversation starts in the page's language
        lang = lang or conv.get("lang") or self.settings.default_language  # type: ignore[assignment]
        assert lang is not None
        active = self.tickets.active_for(conversation_id)
        if active is not None:  # already with staff: say so (once, not again on every press)
            notice = prompts.ALREADY_WITH_STAFF[lang].format(ticket=active.id)
            newest = self.store.last_rows(conversation_id, 1)
            if not newest or newest[0]["content"] != notice:
                self.store.add_message(conversation_id, "system", notice, lang=lang, route=ACK_ROUTE)
            return Reply(notice, "human", conversation_id, None, lang, ticket_id=active.id, reason="with_staff")
        history = self.store.messages(conversation_id, limit=self.settings.history_messages)
        with self.ledger.track(conversation_id=conversation_id, route="human") as req:
            rid = req.request_id
        text = next((m.content for m in reversed(history) if m.role == "user"), "(asked for a person)")
        return self._escalate(conversation_id, rid, text, lang, history, escalation.CUSTOMER_REQUEST, (), False)

    # -- routes ------------------------------------------------------------------------------------
    def _to_staff(self, conversation_id: str, text: str, lang: Lang) -> Reply:
        with self.ledger.track(conversation_id=conversation_id, route="human") as req:
            ticket = self.tickets.customer_message(conversation_id, text, lang)
        rid = req.request_id
        notice = prompts.WITH_STAFF[lang].format(ticket=ticket.id)
        # while the customer waits for a person, the first of their messages is acknowledged (not every one,
        # and not once a colleague has joined and talks with them)
        earlier = self.store.last_rows(conversation_id, 50)[1:]
        last = next((r for r in earlier if r["role"] != "user"), None)
        if last is None or (last["role"] != "staff" and last["route"] not in (ACK_ROUTE, JOINED_ROUTE)):
            self.store.add_message(conversation_id, "system", notice, lang=lang, route=ACK_ROUTE)
        return Reply(notice, "human", conversation_id, rid, lang, ticket_id=ticket.id, reason="with_staff")

    def _escalate(
        self,
        conversation_id: str,
        rid: str,
        text: str,
        lang: Lang,
        history: list[Message],
        reason: str,
        sources: tuple[Source, ...],
        include_text: bool = True,
    ) -> Reply:
        # the ticket's transcript is the history plus this message (already stored as a message row)
        ticket = self.tickets.open(
            conversation_id,
            reason=reason,
            lang=lang,
            history=history,
            text=text,
            sources=sources,
            notice=None,
        )
        notices = prompts.MODEL_FAILURE_HANDOVER if reason == escalation.MODEL_FAILURE else prompts.HANDOVER
        notice = notices[lang].format(ticket=ticket.id)
        self.store.add_message(conversation_id, "assistant", notice, lang=lang, request_id=rid, route="human")
        log.info("conversation %s escalated: %s (ticket %s)", conversation_id, reason, ticket.id)
        return Reply(notice, "human", conversation_id, rid, lang, sources, ticket.id, 0.0, reason)

    def _model_says_escalate(self, conversation_id: str, text: str) -> bool:
        """Ask the model, constrained to 'answer' or 'escalate' (its own ledger row)."""
        with self.ledger.track(conversation_id=conversation_id, route="model") as req:
            prompt = [ChatMessage("user", escalation.DECISION_PROMPT.format(text=text))]
            gen: Generation | None = None
            try:
                gen = self.model.stream(prompt, max_tokens=escalation.DECISION_MAX_TOKENS, temperature=0.0,
                                        grammar=escalation.DECISION_GRAMMAR)  # fmt: skip
                verdict = "".join(gen).strip().lower()
            except Exception as exc:  # any model failure (a load, a dead worker): when in doubt, a human decides
                _log_model_failure(conversation_id, exc)
                req.fail(_failure_text(exc))
                req.measurement = _measure([gen.usage] if gen is not None and gen.usage else [])
                if gen is not None:
                    self._bill_failed_attempts(conversation_id, getattr(gen, "failed_attempts", ()))
                return True
            self._bill_failed_attempts(conversation_id, getattr(gen, "failed_attempts", ()))
            escalate = verdict.startswith("escalate")
            req.route = "human" if escalate else "model"
            req.measurement = _measure([gen.usage] if gen.usage else [])
        return escalate

    def _answer_with_model(
        self,
        conversation_id: str,
        req: Tracked,
        text: str,
        lang: Lang,
        history: list[Message],
        decision: Decision,
        max_tokens: int,
    ) -> Generator[Delta, None, Reply | _Escalation]:
        """Stream the model's answer (Delta pieces); returns the Reply, or the escalation when the model failed.

        With a knowledge base the grounding guard releases the answer sentence by checked sentence
        (bot/guard.py); an answer that fails before any of it is shown is replaced (`_replace`), one that
        fails later ends after the sentences already shown. Fills in `req` (the request's ledger row): any
        model failure (a failed (re)load, a dead worker, an error or a timeout while generating) finishes it
        as `error` with the cause (still route `model`: failed model spend)."""
        rid, sources = req.request_id, decision.sources
        pieces: list[str] = []  # what the model wrote
        shown: list[str] = []  # what the customer saw (all of it without a guard)
        usages: list[Usage] = []
        guard = self.answers.guard(text, lang, sources) if sources else None
        # The timeout bounds generation, not the wait for the model: under load a request may queue behind
        # others (that wait is reported as queue_wait_s), and it starts at the first token.
        deadline: float | None = None
        failure: str | None = None
        stream: Generator[BaseMessageChunk, None, None] | None = None
        try:
            messages = self.build_messages(text, lang, history, sources if self.knowledge is not None else None)
            stream = cast(
                Generator[BaseMessageChunk, None, None],
                self.llm.stream(messages, max_tokens=max_tokens, usage_sink=usages.append),
            )
            for chunk in stream:
                if deadline is None:
                    deadline = time.monotonic() + self.settings.model_timeout_s
                piece = str(chunk.content)
                if piece:
                    pieces.append(piece)
                    visible = piece if guard is None else guard.feed(piece)
                    if visible:
                        shown.append(visible)
                        yield Delta(visible)
                    if guard is not None and guard.failure is not None:
                        stream.close()  # the rest of this answer would not be shown: stop generating it
                        break
                if time.monotonic() > deadline:
                    failure = f"model timeout after {self.settings.model_timeout_s:.0f}s"
                    stream.close()
                    break
        except GeneratorExit:
            if stream is not None:
                stream.close()
            req.measurement = _measure(usages, decision.retrieval_s + (guard.check_s if guard else 0.0))  # cancelled
            self._bill_failed_attempts(conversation_id, usages[:-1])
            self._keep_partial(conversation_id, rid, lang, shown)
            raise
        except BotError:
            raise  # customer-facing (e.g. a message that cannot fit the context window)
        except Exception as exc:  # any model failure escalates; nothing is left `started`
            _log_model_failure(conversation_id, exc)
            failure = _failure_text(exc)
            if stream is not None:
                stream.close()
        req.measurement = _measure(usages, decision.retrieval_s + (guard.check_s if guard else 0.0))
        self._bill_failed_attempts(conversation_id, usages[:-1])  # tries retried on another replica
        if failure is not None:
            # the row stays route `model`: its seconds were spent generating, so a timed-out or failed generation
            # is failed model spend (reports show it by cause); the hand-over is the ticket, not this row's route
            req.fail(failure)
            self._keep_partial(conversation_id, rid, lang, shown)
            return _Escalation(escalation.MODEL_FAILURE, sources)
        reason = decision.reason
        if guard is not None:
            last = guard.finish(complete=not usages or usages[-1].finish_reason != "length")
            if last:
                shown.append(last)
                yield Delta(last)
            req.measurement = _measure(usages, decision.retrieval_s + guard.check_s)  # with the last check
            if guard.failure is not None:
                cause = guard.failure.reason
                log.info("grounding guard stopped a model answer in conversation %s: %s", conversation_id, cause)
                # auto: the whole answer is replaced by the quote, also when its first sentences were shown; when
                # nothing in the passages answers the question well enough to quote, the first sentences (often
                # true but beside the question) go too, and the bot asks back
                if self.answers.falls_back_to_quotes:
                    quoted = self._quote(conversation_id, req, text, lang, decision, f"guard_extractive:{cause}")
                    if quoted is not None:
                        return quoted
                if guard.rejected or self.answers.falls_back_to_quotes:
                    return self._ask_back(conversation_id, req, lang, history, decision, f"guard_clarify:{cause}",
                                          ANSWER_REJECTED, f"guard_escalate:{cause}")  # fmt: skip
                reason = f"guard_truncated:{cause}"  # generate: the sentences shown before the failure stay
        answer = sanitize_answer("".join(shown).strip(), [s.url for s in sources])
        self.store.add_message(
            conversation_id, "assistant", answer, lang=lang, request_id=rid, route="model", sources=sources
        )
        return Reply(answer, "model", conversation_id, rid, lang, sources, None, req.measurement.compute_s, reason)

    def _quote(
        self, conversation_id: str, req: Tracked, text: str, lang: Lang, decision: Decision, reason: str
    ) -> Reply | None:
        """An extractive answer (bot/extractive.py) citing only the quoted article, or None when nothing in the
        passages answers well enough. Its compute is billed like retrieval's."""
        t0 = time.perf_counter()
        extract = self.answers.extract(text, lang, decision.sources)
        m = req.measurement or Measurement()
        req.measurement = replace(m, retrieval_s=m.retrieval_s + time.perf_counter() - t0)
        if extract is None:
            return None
        req.reason = reason
        sources = (extract.source,)
        self.store.add_message(conversation_id, "assistant", extract.text, lang=lang, request_id=req.request_id,
                               route="extractive", sources=sources)  # fmt: skip
        return Reply(extract.text, "faq", conversation_id, req.request_id, lang, sources, None,
                     req.measurement.compute_s, reason)  # fmt: skip

    def _ask_back(
        self, conversation_id: str, req: Tracked, lang: Lang, history: list[Message], decision: Decision,
        reason: str, escalation_reason: str, escalation_note: str | None = None,
    ) -> Reply | _Escalation:  # fmt: skip
        """No answer to give: one clarifying question, and a person when the customer was already asked."""
        if _asked_to_clarify(history):
            req.route, req.reason = "human", escalation_note or escalation_reason
            return _Escalation(escalation_reason, decision.sources)
        req.reason = reason
        answer = prompts.CLARIFY[lang]
        self.store.add_message(conversation_id, "assistant", answer, lang=lang, request_id=req.request_id,
                               route=CLARIFY_ROUTE)  # fmt: skip
        compute_s = req.measurement.compute_s if req.measurement else 0.0
        return Reply(answer, "faq", conversation_id, req.request_id, lang, (), None, compute_s, reason)

    def _bill_failed_attempts(self, conversation_id: str, attempts: Sequence[Usage]) -> None:
        """A served engine retried the request on another replica before any piece reached the customer: each
        failed try is its own ledger row (`error`, with its cause), billed for what it spent."""
        for usage in attempts:
            rid = self.ledger.start(conversation_id=conversation_id, route="model", model_id=usage.model_id,
                                    device=usage.device)  # fmt: skip
            cause = f"attempt {usage.attempt} on {usage.replica or 'the engine'} failed, retried: {usage.error}"
            self.ledger.finish(rid, status="error", measurement=measurement_of(usage), error=cause[:500],
                               reason="engine_retry")  # fmt: skip

    def _keep_partial(self, conversation_id: str, rid: str, lang: Lang, pieces: list[str]) -> None:
        """A partial answer (cancelled or failed) is kept, sanitised like a whole one."""
        if pieces:
            self.store.add_message(conversation_id, "assistant", sanitize_answer("".join(pieces).strip()), lang=lang,
                                   request_id=rid, route=PARTIAL_ROUTE)  # fmt: skip

    def build_messages(
        self, text: str, lang: Lang, history: list[Message], sources: Sequence[Source] | None
    ) -> list[BaseMessage]:
        """The prompt: the fixed system message, as much recent history as fits, and the question with the
        passages retrieved for it (`sources` None: the bot has no knowledge base).

        Earlier questions keep the passages they were sent with (rebuilt from the sources stored with each
        model answer), so a follow-up prompt extends the previous one and llama.cpp reuses the KV cache for
        everything before the new question; a passage already in the prompt is not repeated. When the prompt
        does not fit, earlier questions lose their passages first (oldest first: the prompt then still
        extends the previous turn's up to the first question that keeps them), then the oldest turns go,
        then the current question's least relevant passages, and finally the question is shortened."""
        budget = self.model.n_ctx - self.max_tokens - SAFETY_TOKENS
        system = prompts.system_prompt(lang, self.settings.company_name)
        turns = [m for m in history if m.role in ("user", "assistant", "staff")]
        current = list(sources) if sources is not None else None
        expand_from = 0 if current is not None else len(turns)  # turns from here on keep their passages
        while True:
            seen: set[tuple[str, str, str]] = set()
            past = [self._past_turn(turns, i, lang, seen, i >= expand_from) for i in range(len(turns))]
            question = prompts.user_turn(lang, text, None if current is None else _passages(current, lang, seen))
            value = prompts.CHAT_PROMPT.invoke({"system": system, "history": past, "question": question})
            messages = value.to_messages()
            if self.model.count_tokens(to_chat_messages(messages)) <= budget:
                return messages
            if expand_from < len(turns):
                # the oldest question that still has its passages loses them (answers have none to lose,
                # so stepping over one would only rebuild and re-count the same prompt)
                users = (i for i in range(expand_from, len(turns)) if turns[i].role == "user")
                expand_from = next(users, len(turns) - 1) + 1
            elif turns:
                turns = turns[1:]  # drop the oldest turn
                expand_from = len(turns)
            elif current:
                current = current[:-1]  # then the least relevant passage
            else:
                text = _shorten(text, lang)  # finally the question itself (only when it alone overflows)

    @staticmethod
    def _past_turn(
        turns: list[Message], i: int, lang: Lang, seen: set[tuple[str, str, str]], expand: bool
    ) -> BaseMessage:
        """History message i as the model saw it: a question answered by the model with its passages."""
        m = turns[i]
        if m.role != "user":
            return AIMessage(m.content)
        answer = turns[i + 1] if i + 1 < len(turns) else None
        if expand and answer is not None and answer.role == "assistant" and answer.route == "model":
            return HumanMessage(prompts.user_turn(lang, m.content, _passages(answer.sources, lang, seen)))
        return HumanMessage(m.content)


def _degrade(decision: Decision, step: Step) -> Decision:
    """Apply the budget step: FAQ answers only (no generation), then everything to staff."""
    if step >= Step.escalate and decision.kind != "human":
        return Decision("human", escalation.BUDGET, sources=decision.sources, retrieval_s=decision.retrieval_s)
    if step >= Step.faq_only and (decision.kind == "model" or decision.ask_model):
        return Decision("human", escalation.BUDGET, sources=decision.sources, retrieval_s=decision.retrieval_s)
    return decision


def _passages(sources: Sequence[Source], lang: Lang, seen: set[tuple[str, str, str]]) -> list[str]:
    """Numbered passages; one already shown earlier in the prompt is named, not repeated (`seen` is updated)."""
    out = []
    for n, source in enumerate(sources, 1):
        head = f"[{n}] {source.title}" + (f" — {source.section}" if source.section else "")
        key = (source.title, source.section, source.snippet[:PASSAGE_CHARS])
        out.append(f"{head} {prompts.SEEN_ABOVE[lang]}" if key in seen else f"{head}\n{key[2]}")
        seen.add(key)
    return out


def _shorten(text: str, lang: Lang) -> str:
    keep = max(1, int(len(text) * 0.8))
    if keep >= len(text):
        raise InputError(prompts.TOO_LONG_FOR_MODEL[lang])
    return text[:keep]


@dataclass(frozen=True)
class _Escalation:
    """The request goes to a person (the ticket is opened after its ledger row is finished)."""

    reason: str
    sources: tuple[Source, ...]


def _failure_text(exc: BaseException) -> str:
    """The cause recorded in the ledger's `error` column."""
    return (str(exc) if isinstance(exc, ModelError) else f"{type(exc).__name__}: {exc}")[:500]


def _log_model_failure(conversation_id: str, exc: BaseException) -> None:
    if isinstance(exc, ModelError):
        log.warning("model failed for conversation %s: %s", conversation_id, exc)
    else:  # not one of ours: keep the traceback
        log.exception("model call failed for conversation %s", conversation_id)


def _measure(usages: list[Usage], retrieval_s: float = 0.0) -> Measurement:
    if not usages:
        return Measurement(retrieval_s=retrieval_s)
    return measurement_of(usages[-1], retrieval_s)


def measurement_of(u: Usage, retrieval_s: float = 0.0) -> Measurement:
    """The ledger's Measurement of one model call (the ledger does not import the model layer)."""
    t = u.timings
    return Measurement(
        queue_wait_s=u.queue_wait_s,
        prefill_s=u.prefill_s,
        decode_s=u.decode_s,
        retrieval_s=retrieval_s,
        prompt_tokens=u.prompt_tokens,
        completion_tokens=u.completion_tokens,
        cached_tokens=u.cached_tokens,
        model_id=u.model_id,
        device=u.device,
        engine=u.engine,
        replica=u.replica,
        sent_at=u.sent_at,
        first_token_at=u.first_token_at,
        ended_at=u.ended_at,
        estimated=u.estimated,
        engine_prompt_n=t.prompt_n if t else None,
        engine_prompt_ms=t.prompt_ms if t else None,
        engine_predicted_n=t.predicted_n if t else None,
        engine_predicted_ms=t.predicted_ms if t else None,
        engine_cache_n=t.cache_n if t else None,
    )
