"""End-to-end: the widget and the console in a real Chromium against a real server.

Run with `pytest -m browser tests/test_browser.py`. Needs /usr/bin/chromium.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.browser_support import run_cli, running_server

pytestmark = pytest.mark.browser

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect
Page = playwright_api.Page

AGENT = "agent1"
AGENT_PASSWORD = "S3cure-pass-1"
SECOND_AGENT = "agent2"
SECOND_AGENT_NAME = "小王"
AGENT_NEW_PASSWORD = "S3cure-pass-2-changed"
HOSTILE = "<img src=x onerror=alert(1)>"
AGENT_REPLY = "您好，我来帮您看看 <b>不是粗体</b>"
VAGUE_QUESTIONS = ("保存", "水果", "怎么保存")

# Everything below waits on the page, never on the clock; the robot's first
# answer loads the segmenter, so allow generous waits on slow machines.
expect.set_options(timeout=20_000)


# ---- fixtures ------------------------------------------------------------------


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    data_dir = tmp_path / "data"
    run_cli("init", data_dir=data_dir)
    run_cli(
        "user",
        "add",
        AGENT,
        "--role",
        "agent",
        "--password",
        AGENT_PASSWORD,
        data_dir=data_dir,
    )
    with running_server(data_dir, "--demo") as base_url:
        yield base_url


@pytest.fixture
def two_agent_server(tmp_path: Path) -> Iterator[str]:
    """The demo server with a second agent, 小王, to hand chats to."""
    data_dir = tmp_path / "data"
    run_cli("init", data_dir=data_dir)
    for username, extra in ((AGENT, ()), (SECOND_AGENT, ("--display-name", "小王"))):
        run_cli(
            "user",
            "add",
            username,
            "--role",
            "agent",
            "--password",
            AGENT_PASSWORD,
            *extra,
            data_dir=data_dir,
        )
    with running_server(data_dir, "--demo") as base_url:
        yield base_url


# ---- helpers -------------------------------------------------------------------


def open_widget(page: Page, base_url: str) -> None:
    page.goto(f"{base_url}/demo")
    page.locator("#goflypy-launcher").click()
    expect(page.locator("#goflypy-panel")).to_be_visible()


def ask(page: Page, text: str) -> None:
    """Send text from the widget and wait until the server has stored it."""
    page.locator("#goflypy-input").fill(text)
    page.locator("#goflypy-input").press("Enter")
    mine = page.locator('.goflypy-msg[data-sender="visitor"][data-seq]').filter(
        has_text=text
    )
    expect(mine.last).to_be_visible()


def last_stored(page: Page) -> object:
    return page.locator(".goflypy-msg[data-seq]").last


def shown_messages(page: Page) -> list[tuple[int, str, str]]:
    """(seq, sender, text) of every stored message on screen, in screen order."""
    return page.locator(".goflypy-msg[data-seq]").evaluate_all(
        """els => els.map(e => [Number(e.dataset.seq), e.dataset.sender,
                                e.querySelector('.bubble').textContent])"""
    )


def assert_complete_history(messages: list[tuple[int, str, str]]) -> None:
    seqs = [seq for seq, _, _ in messages]
    assert seqs == list(range(1, len(seqs) + 1)), (
        f"history out of order or repeated: {seqs}"
    )


def sign_in(page: Page, base_url: str, username: str = AGENT) -> None:
    page.goto(f"{base_url}/console/login")
    page.locator("#username").fill(username)
    page.locator("#password").fill(AGENT_PASSWORD)
    page.locator("#login-submit").click()
    page.wait_for_load_state()
    if "/console/password" in page.url:
        # Accounts created with a given password may still have to change it.
        page.locator("#current_password").fill(AGENT_PASSWORD)
        page.locator("#new_password").fill(AGENT_NEW_PASSWORD)
        page.locator("#confirm_password").fill(AGENT_NEW_PASSWORD)
        page.locator("#password-submit").click()
    expect(page).to_have_url(re.compile(r"/console/?$"))
    expect(page.locator("#conn-state")).to_have_attribute("data-state", "online")


# ---- tests ---------------------------------------------------------------------


def test_shopper_gets_answers_suggestions_and_a_queue_place(
    server: str, new_page
) -> None:
    shopper = new_page()
    open_widget(shopper, server)

    ask(shopper, "草莓怎么保存")
    answer = last_stored(shopper)
    expect(answer).to_have_attribute("data-sender", "robot")
    expect(answer.locator(".goflypy-suggestion")).to_have_count(0)
    expect(answer.locator(".bubble")).not_to_be_empty()

    # A vague question: the robot should offer entries rather than guess.
    for vague in VAGUE_QUESTIONS:
        ask(shopper, vague)
        reply = last_stored(shopper)
        expect(reply).to_have_attribute("data-sender", "robot")
        assert reply.get_attribute("data-kind") != "handoff", (
            f"robot gave up on {vague!r}"
        )
        if reply.get_attribute("data-kind") == "suggest":
            break
    suggestions = last_stored(shopper).locator(".goflypy-suggestion")
    expect(suggestions.first).to_be_visible()
    question = suggestions.first.text_content()
    suggestions.first.click()
    asked = shopper.locator('.goflypy-msg[data-sender="visitor"][data-seq]').last
    expect(asked.locator(".bubble")).to_have_text(question)
    expect(last_stored(shopper)).to_have_attribute("data-sender", "robot")
    expect(last_stored(shopper).locator(".goflypy-suggestion")).to_have_count(0)

    shopper.locator("#goflypy-human").click()
    expect(shopper.locator("#goflypy-status")).to_contain_text("排队中")


def test_agent_and_shopper_chat_live_then_history_survives(
    server: str, new_page
) -> None:
    # The shopper asks something hostile-looking and asks for a human.
    shopper = new_page()
    open_widget(shopper, server)
    ask(shopper, HOSTILE)
    robot = shopper.locator('.goflypy-msg[data-sender="robot"][data-seq]')
    expect(robot).to_have_count(2)  # the greeting and the reply
    if robot.nth(1).get_attribute("data-kind") != "handoff":
        shopper.locator("#goflypy-human").click()
    expect(shopper.locator("#goflypy-status")).to_contain_text("排队中")
    # Nobody is signed in yet: the shopper is invited to leave a message.
    expect(last_stored(shopper)).to_contain_text("现在没有客服在线")
    hostile_bubble = shopper.locator(
        '.goflypy-msg[data-sender="visitor"] .bubble'
    ).first
    expect(hostile_bubble).to_have_text(HOSTILE)
    expect(shopper.locator(".goflypy-msg img")).to_have_count(0)

    # The agent sees it waiting, with unread messages, and opens it.
    agent = new_page()
    sign_in(agent, server)
    expect(agent.locator("#queue-tab .count")).to_have_text("1")
    item = agent.locator(".conv-item[data-id]").first
    expect(item.locator(".unread")).to_have_text(re.compile(r"^[1-9]\d*$"))
    item.click()
    visitor_msg = agent.locator(
        '#messages .msg[data-sender="visitor"][data-seq] .bubble'
    ).first
    expect(visitor_msg).to_have_text(HOSTILE)
    expect(agent.locator("#messages img")).to_have_count(0)
    info = agent.locator("#visitor-info")
    expect(info.locator('[data-field="channel"]')).to_have_text("网页")
    expect(info.locator('[data-field="page"]')).to_contain_text("/demo")
    expect(info.locator('[data-field="first_seen"]')).to_have_text(
        re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d")
    )
    expect(info.locator('[data-field="conversations"]')).to_have_text(
        re.compile(r"^\d+$")
    )
    expect(agent.locator(".conv-item[data-id] .unread")).to_have_count(0)

    # Claim: the shopper is told who is serving them.
    agent.locator("#claim").click()
    expect(agent.locator("#claim")).to_be_hidden()
    expect(agent.locator("#mine-tab .count")).to_have_text("1")
    expect(shopper.locator("#goflypy-status")).to_contain_text("为您服务")

    # Typing shows on the other side, both ways.
    agent.locator("#reply-input").press_sequentially("您好")
    expect(shopper.locator("#goflypy-typing")).to_be_visible()
    shopper.locator("#goflypy-input").press_sequentially("在吗")
    expect(agent.locator("#typing")).to_be_visible()

    # A reply arrives live, as text.
    agent.locator("#reply-input").fill(AGENT_REPLY)
    agent.locator("#reply-input").press("Enter")
    reply = shopper.locator('.goflypy-msg[data-sender="agent"][data-seq] .bubble')
    expect(reply.last).to_have_text(AGENT_REPLY)
    expect(
        agent.locator('#messages .msg[data-sender="agent"][data-seq] .bubble').last
    ).to_have_text(AGENT_REPLY)

    shopper.locator("#goflypy-input").fill("好的，谢谢")
    shopper.locator("#goflypy-input").press("Enter")
    expect(
        agent.locator('#messages .msg[data-sender="visitor"][data-seq]').last
    ).to_contain_text("好的，谢谢")

    # The agent closes; the shopper sees it and rates.
    agent.locator("#close-conv").click()
    expect(shopper.locator("#goflypy-status")).to_contain_text("已结束")
    shopper.locator('.goflypy-star[data-score="5"]').click()
    expect(shopper.locator("#goflypy-rating")).to_contain_text("感谢")
    before = shown_messages(shopper)
    assert_complete_history(before)

    # Reloading shows the whole history once, in order.
    shopper.reload()
    shopper.locator("#goflypy-launcher").click()
    last_seq = before[-1][0]
    expect(shopper.locator(f'.goflypy-msg[data-seq="{last_seq}"]')).to_have_count(1)
    after = shown_messages(shopper)
    assert_complete_history(after)
    assert after[: len(before)] == before
    expect(shopper.locator(".goflypy-msg img")).to_have_count(0)

    # Another device, linked by token, shows the same history.
    token = shopper.evaluate("localStorage.getItem('goflypy.visitor_token')")
    assert token
    phone = new_page()
    phone.goto(f"{server}/chat?token={quote(token)}")
    expect(phone.locator("#goflypy-panel")).to_be_visible()
    expect(phone.locator("#goflypy-launcher")).to_be_hidden()
    expect(phone).not_to_have_url(re.compile("token="))
    expect(phone.locator(f'.goflypy-msg[data-seq="{last_seq}"]')).to_have_count(1)
    on_phone = shown_messages(phone)
    assert_complete_history(on_phone)
    assert on_phone[: len(after)] == after


def test_agent_inserts_a_canned_reply_with_a_slash_and_sends_it(
    server: str, new_page
) -> None:
    shopper = new_page()
    open_widget(shopper, server)
    ask(shopper, "什么时候发货")
    shopper.locator("#goflypy-human").click()
    expect(shopper.locator("#goflypy-status")).to_contain_text("排队中")

    agent = new_page()
    sign_in(agent, server)
    agent.locator(".conv-item[data-id]").first.click()
    agent.locator("#claim").click()
    expect(agent.locator("#claim")).to_be_hidden()
    box = agent.locator("#reply-input")
    panel = agent.locator("#canned")

    # The button lists every demo reply; Esc closes the list.
    agent.locator("#canned-open").click()
    expect(panel).to_be_visible()
    expect(panel.locator(".canned-item")).to_have_count(5)
    agent.locator("#canned-filter").press("Escape")
    expect(panel).to_be_hidden()

    # "/" at the start of the box opens the list, filtered by what follows.
    box.press_sequentially("/发货")
    expect(panel).to_be_visible()
    items = panel.locator(".canned-item")
    expect(items).to_have_count(1)
    expect(items.first.locator(".canned-title")).to_have_text("发货时间")
    text = items.first.locator(".canned-text").text_content()
    assert text and "发货" in text

    # Enter puts the reply into the box and sends nothing.
    box.press("Enter")
    expect(panel).to_be_hidden()
    expect(box).to_have_value(text)
    sent = agent.locator('#messages .msg[data-sender="agent"]')
    expect(sent).to_have_count(0)

    # The agent may still edit it; the next Enter sends, the shopper sees it.
    box.press("End")
    box.press_sequentially("😊")
    box.press("Enter")
    expect(box).to_have_value("")
    reply = shopper.locator('.goflypy-msg[data-sender="agent"][data-seq] .bubble')
    expect(reply.last).to_have_text(text + "😊")
    expect(sent.last.locator(".bubble")).to_have_text(text + "😊")


def test_agent_notes_then_hands_the_chat_to_another_agent(
    two_agent_server: str, new_page
) -> None:
    server = two_agent_server
    note = "老客户，上次投诉过物流 <img src=x onerror=alert(1)>"
    shopper = new_page()
    open_widget(shopper, server)
    ask(shopper, "我要改地址")
    shopper.locator("#goflypy-human").click()
    expect(shopper.locator("#goflypy-status")).to_contain_text("排队中")

    first, second = new_page(), new_page()
    sign_in(first, server)
    sign_in(second, server, SECOND_AGENT)
    first.locator(".conv-item[data-id]").first.click()
    first.locator("#claim").click()
    expect(first.locator("#claim")).to_be_hidden()
    box = first.locator("#reply-input")
    box.fill("您好，我来帮您看看")
    box.press("Enter")
    reply = shopper.locator('.goflypy-msg[data-sender="agent"][data-seq] .bubble')
    expect(reply.last).to_have_text("您好，我来帮您看看")

    # An internal note: yellow, labelled, as text; the reply box goes back after.
    first.locator("#note-toggle").click()
    expect(first.locator("#note-toggle")).to_have_attribute("aria-pressed", "true")
    box.fill(note)
    box.press("Enter")
    written = first.locator('#messages .msg[data-sender="note"]')
    expect(written).to_have_count(1)
    expect(written.locator(".note-label")).to_have_text("内部备注")
    expect(written.locator(".bubble")).to_have_text(note)
    expect(written).not_to_have_class(re.compile("pending"))
    first.locator("#note-toggle").click()
    box.fill("请稍等，我请同事帮您处理")
    box.press("Enter")
    expect(reply.last).to_have_text("请稍等，我请同事帮您处理")
    expect(shopper.locator("#goflypy-panel")).not_to_contain_text("老客户")
    expect(first.locator("#messages img")).to_have_count(0)

    # Hand it to 小王, who is told and finds the chat and the note.
    first.locator("#transfer").click()
    first.locator(f'#transfer-menu button[data-username="{SECOND_AGENT}"]').click()
    expect(shopper.locator("#goflypy-status")).to_contain_text(SECOND_AGENT_NAME)
    expect(first.locator("#transfer")).to_be_hidden()
    expect(first.locator("#claim")).to_contain_text(SECOND_AGENT_NAME)

    notice = second.locator(".toast").filter(has_text="转接给您")
    expect(notice).to_be_visible()
    notice.click()
    expect(second.locator("#mine-tab .count")).to_have_text("1")
    thread = second.locator("#messages")
    expect(thread.locator('.msg[data-sender="note"] .bubble')).to_have_text(note)
    expect(thread.locator('.msg[data-sender="agent"] .bubble').last).to_have_text(
        "请稍等，我请同事帮您处理"
    )
    expect(thread.locator('.msg[data-sender="visitor"]').first).to_contain_text(
        "我要改地址"
    )
    expect(thread.locator("img")).to_have_count(0)
    # The note sits after the message that was last when it was written.
    senders = thread.locator(".msg").evaluate_all(
        "els => els.map(e => e.dataset.sender)"
    )
    assert senders.index("note") < len(senders) - 1

    # After a reload the shopper still sees no note.
    shopper.reload()
    shopper.locator("#goflypy-launcher").click()
    expect(reply.last).to_have_text("请稍等，我请同事帮您处理")
    expect(shopper.locator("#goflypy-panel")).not_to_contain_text("老客户")
