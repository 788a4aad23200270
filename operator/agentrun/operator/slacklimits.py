"""Slack's documented Block Kit limits, and a check of a message against them.

From Slack's Block Kit reference (blocks, block elements, composition objects): a message
holds at most 50 blocks; a header's text 150 characters; a section's text 3000 and at most 10
fields of 2000; a context at most 10 elements; an actions block at most 25 elements; a button's
text 75, its value 2000, an action_id or block_id 255; a confirm dialog's title 100, text 300,
buttons 30; an input's label 2000 and a plain_text_input's placeholder 150 and max_length
3000. A message's top-level ``text`` is truncated past 40,000 characters; notifications keep
it far shorter.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

MESSAGE_BLOCKS = 50
MESSAGE_TEXT = 3000  # our own bound (Slack truncates at 40,000)
HEADER = 150
SECTION_TEXT = 3000
SECTION_FIELDS = 10
FIELD_TEXT = 2000
CONTEXT_ELEMENTS = 10
CONTEXT_TEXT = 3000
ACTIONS_ELEMENTS = 25
BUTTON_TEXT = 75
BUTTON_VALUE = 2000
ACTION_ID = 255
BLOCK_ID = 255
CONFIRM_TITLE = 100
CONFIRM_TEXT = 300
CONFIRM_BUTTON = 30
INPUT_LABEL = 2000
PLACEHOLDER = 150
INPUT_MAX_LENGTH = 3000


def _text(where: str, obj: Any, limit: int, kinds: tuple[str, ...]) -> list[str]:
    if not isinstance(obj, dict) or obj.get("type") not in kinds:
        return [f"{where}: a text object of type {'/'.join(kinds)} is required"]
    text = obj.get("text")
    if not isinstance(text, str) or not text:
        return [f"{where}: empty text"]
    if len(text) > limit:
        return [f"{where}: {len(text)} characters, Slack allows {limit}"]
    return []


def _button(where: str, el: dict[str, Any]) -> list[str]:
    problems = _text(f"{where}.text", el.get("text"), BUTTON_TEXT, ("plain_text",))
    if len(str(el.get("value", ""))) > BUTTON_VALUE:
        problems.append(f"{where}.value: over {BUTTON_VALUE} characters")
    if not 0 < len(str(el.get("action_id", ""))) <= ACTION_ID:
        problems.append(f"{where}.action_id: 1 to {ACTION_ID} characters")
    if el.get("style") not in (None, "primary", "danger"):
        problems.append(f"{where}.style: primary or danger")
    confirm = el.get("confirm")
    if confirm is not None:
        problems += _text(f"{where}.confirm.title", confirm.get("title"), CONFIRM_TITLE,
                          ("plain_text",))  # fmt: skip
        problems += _text(f"{where}.confirm.text", confirm.get("text"), CONFIRM_TEXT,
                          ("plain_text", "mrkdwn"))  # fmt: skip
        for key in ("confirm", "deny"):
            problems += _text(f"{where}.confirm.{key}", confirm.get(key), CONFIRM_BUTTON,
                              ("plain_text",))  # fmt: skip
    return problems


def _header(where: str, block: dict[str, Any]) -> list[str]:
    return _text(f"{where}.text", block.get("text"), HEADER, ("plain_text",))


def _section(where: str, block: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    if "text" not in block and "fields" not in block:
        problems.append(f"{where}: a section needs text or fields")
    if "text" in block:
        problems += _text(f"{where}.text", block["text"], SECTION_TEXT, ("mrkdwn", "plain_text"))
    fields = block.get("fields") or []
    if len(fields) > SECTION_FIELDS:
        problems.append(f"{where}.fields: {len(fields)}, Slack allows {SECTION_FIELDS}")
    for i, f in enumerate(fields):
        problems += _text(f"{where}.fields[{i}]", f, FIELD_TEXT, ("mrkdwn", "plain_text"))
    return problems


def _context(where: str, block: dict[str, Any]) -> list[str]:
    elements = block.get("elements") or []
    problems = (
        []
        if 0 < len(elements) <= CONTEXT_ELEMENTS
        else [f"{where}.elements: 1 to {CONTEXT_ELEMENTS}"]
    )
    for i, el in enumerate(elements):
        problems += _text(f"{where}.elements[{i}]", el, CONTEXT_TEXT, ("mrkdwn", "plain_text"))
    return problems


def _actions(where: str, block: dict[str, Any]) -> list[str]:
    elements = block.get("elements") or []
    problems = (
        []
        if 0 < len(elements) <= ACTIONS_ELEMENTS
        else [f"{where}.elements: 1 to {ACTIONS_ELEMENTS}"]
    )
    for i, el in enumerate(elements):
        problems += _button(f"{where}.elements[{i}]", el)
    return problems


def _input(where: str, block: dict[str, Any]) -> list[str]:
    problems = _text(f"{where}.label", block.get("label"), INPUT_LABEL, ("plain_text",))
    el = block.get("element") or {}
    if el.get("type") != "plain_text_input":
        problems.append(f"{where}.element: plain_text_input expected")
    if not 0 < len(str(el.get("action_id", ""))) <= ACTION_ID:
        problems.append(f"{where}.element.action_id: 1 to {ACTION_ID} characters")
    if "placeholder" in el:
        problems += _text(f"{where}.element.placeholder", el["placeholder"], PLACEHOLDER,
                          ("plain_text",))  # fmt: skip
    if int(el.get("max_length", 0)) > INPUT_MAX_LENGTH:
        problems.append(f"{where}.element.max_length: at most {INPUT_MAX_LENGTH}")
    return problems


def _divider(where: str, block: dict[str, Any]) -> list[str]:
    return []


_CHECKS: dict[str, Callable[[str, dict[str, Any]], list[str]]] = {
    "header": _header,
    "section": _section,
    "context": _context,
    "actions": _actions,
    "input": _input,
    "divider": _divider,
}


def _block(where: str, block: dict[str, Any]) -> list[str]:
    check_one = _CHECKS.get(str(block.get("type")))
    if check_one is None:
        return [f"{where}: unknown block type {block.get('type')!r}"]
    problems = check_one(where, block)
    if len(str(block.get("block_id", ""))) > BLOCK_ID:
        problems.append(f"{where}.block_id: over {BLOCK_ID} characters")
    return problems


def check(message: dict[str, Any]) -> list[str]:
    """Every way `message` ({text, blocks}) breaks Slack's limits; [] when it fits."""
    problems: list[str] = []
    text = message.get("text")
    if not isinstance(text, str) or not text:
        problems.append("text: the fallback text is required (notifications, screen readers)")
    elif len(text) > MESSAGE_TEXT:
        problems.append(f"text: {len(text)} characters, over {MESSAGE_TEXT}")
    blocks = message.get("blocks") or []
    if len(blocks) > MESSAGE_BLOCKS:
        problems.append(f"blocks: {len(blocks)}, Slack allows {MESSAGE_BLOCKS}")
    ids = [b["block_id"] for b in blocks if "block_id" in b]
    if len(ids) != len(set(ids)):
        problems.append("blocks: block_id values must be unique in a message")
    for i, block in enumerate(blocks):
        problems += _block(f"blocks[{i}]", block)
    return problems
