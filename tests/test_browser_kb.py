"""The knowledge-base editor and agents' suggestions in a real Chromium.

Run with `pytest -m browser tests/test_browser_kb.py`. Needs /usr/bin/chromium.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser_support import run_cli, running_server

pytestmark = pytest.mark.browser

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect
Page = playwright_api.Page

ADMIN = "boss"
PASSWORD = "S3cure-admin-1"
NEW_PASSWORD = "S3cure-admin-2-changed"
NEW_ANSWER = "草莓请连盒冷藏，<b>两天内</b>吃完；吃前再洗。"

# Waits are on the page, never on the clock; the first robot answer loads
# the segmenter, so allow generous waits on slow machines.
expect.set_options(timeout=20_000)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    data_dir = tmp_path / "data"
    run_cli("init", data_dir=data_dir)
    run_cli(
        "user", "add", ADMIN, "--role", "admin", "--password", PASSWORD,
        data_dir=data_dir,
    )  # fmt: skip
    with running_server(data_dir, "--demo") as base_url:
        yield base_url


def sign_in(page: Page, base_url: str, target: str) -> None:
    page.goto(f"{base_url}/console/login?next={target}")
    page.locator("#username").fill(ADMIN)
    page.locator("#password").fill(PASSWORD)
    page.locator("#login-submit").click()
    page.wait_for_load_state()
    if "/console/password" in page.url:
        page.locator("#current_password").fill(PASSWORD)
        page.locator("#new_password").fill(NEW_PASSWORD)
        page.locator("#confirm_password").fill(NEW_PASSWORD)
        page.locator("#password-submit").click()
        expect(page).to_have_url(re.compile(r"/console/?$"))
        page.goto(f"{base_url}{target}")
    expect(page).to_have_url(re.compile(re.escape(target) + "$"))


def try_robot(page: Page, text: str) -> None:
    page.locator("#try-input").fill(text)
    page.locator("#try-run").click()


def test_admin_edits_an_entry_and_try_it_answers_with_the_edit(
    server: str, new_page
) -> None:
    admin = new_page()
    sign_in(admin, server, "/console/kb")
    rows = admin.locator("#kb-list .kb-row")
    expect(rows.first).to_be_visible()

    # Find the strawberry entry and rewrite its answer.
    admin.locator("#kb-search").fill("草莓")
    row = admin.locator('.kb-row[data-id="storage-strawberry"]')
    expect(row).to_be_visible()
    row.locator(".kb-edit").click()
    expect(admin.locator("#kb-form")).to_be_visible()
    expect(admin.locator("#kb-id")).to_have_value("storage-strawberry")
    admin.locator("#kb-answer").fill(NEW_ANSWER)
    admin.locator("#kb-alternatives").fill("草莓放冰箱可以吗\n草莓买回来怎么放")
    admin.locator("#kb-save").click()
    expect(admin.locator("#kb-notice")).to_contain_text("已保存条目 storage-strawberry")
    expect(row.locator(".kb-answer")).to_have_text(NEW_ANSWER)
    expect(admin.locator("#kb-list b")).to_have_count(0)

    # "Try it" answers with the edit, and shows the scores and top three.
    try_robot(admin, "草莓买回来怎么放")
    expect(admin.locator("#try-action")).to_have_attribute("data-action", "answer")
    expect(admin.locator("#try-reply")).to_have_text(NEW_ANSWER)
    expect(admin.locator("#try-score")).to_have_text(re.compile(r"^[01]\.\d{3}$"))
    top = admin.locator("#try-top .kb-top-item")
    expect(top).to_have_count(3)
    expect(top.first).to_have_attribute("data-id", "storage-strawberry")
    expect(admin.locator(".kb-try b")).to_have_count(0)

    # Held back from the best entry: the box says why.
    try_robot(admin, "榴莲可以放冰箱吗")
    expect(admin.locator("#try-action")).to_have_attribute("data-action", "handoff")
    try_robot(admin, "水果怎么保存")
    expect(admin.locator("#try-action")).to_have_attribute("data-action", "suggest")
    expect(admin.locator("#try-action")).to_contain_text("问题没说明是哪一种")

    # A bad synonym is refused with a message; the robot keeps answering.
    admin.locator('[data-kb-tab="vocabulary"]').click()
    admin.locator("#kb-syn-canonical").fill("士多啤梨")
    admin.locator("#kb-syn-variants").fill("草莓")
    admin.locator("#kb-syn-save").click()
    expect(admin.locator("#kb-notice")).to_have_attribute("data-kind", "error")
    expect(admin.locator("#kb-notice")).to_contain_text("循环")
    try_robot(admin, "草莓怎么保存")
    expect(admin.locator("#try-reply")).to_have_text(NEW_ANSWER)


def test_agent_sends_a_suggested_answer_in_one_click(server: str, new_page) -> None:
    shopper = new_page()
    shopper.goto(f"{server}/demo")
    shopper.locator("#goflypy-launcher").click()
    shopper.locator("#goflypy-input").fill("车厘子买回来能放多久")
    shopper.locator("#goflypy-input").press("Enter")
    robot = shopper.locator('.goflypy-msg[data-sender="robot"][data-seq]')
    expect(robot).to_have_count(2)  # the greeting and the reply
    shopper.locator("#goflypy-human").click()
    expect(shopper.locator("#goflypy-status")).to_contain_text("排队中")

    agent = new_page()
    sign_in(agent, server, "/console")
    agent.locator(".conv-item[data-id]").first.click()
    panel = agent.locator("#kb-suggest")
    expect(panel).to_be_visible()
    items = panel.locator(".kb-suggest-item")
    expect(items.first).to_have_attribute("data-id", "storage-cherry")
    assert items.count() <= 3
    answer = items.first.locator(".kb-suggest-answer").text_content()
    assert answer and "樱桃" in answer

    items.first.locator(".kb-suggest-send").click()
    sent = shopper.locator('.goflypy-msg[data-sender="agent"][data-seq] .bubble')
    expect(sent.last).to_have_text(answer)
    expect(
        agent.locator('#messages .msg[data-sender="agent"][data-seq] .bubble').last
    ).to_have_text(answer)
    expect(agent.locator("#reply-input")).to_have_value("")


def test_admin_adds_edits_and_deletes_a_category_rule(server: str, new_page) -> None:
    admin = new_page()
    sign_in(admin, server, "/console/kb")
    admin.locator('[data-kb-tab="vocabulary"]').click()

    # The shipped rules are listed read-only, folded away.
    shipped = admin.locator("#kb-cat-shipped")
    expect(admin.locator("#kb-cat-empty")).to_be_visible()
    shipped.locator("summary").click()
    fruit = shipped.locator('.kb-shipped-rule[data-topic="水果"]')
    expect(fruit).to_contain_text("草莓")
    expect(fruit.locator("button")).to_have_count(0)

    # A loop is refused with the reason.
    admin.locator("#kb-cat-topic").fill("草莓")
    admin.locator("#kb-cat-members").fill("水果")
    admin.locator("#kb-cat-save").click()
    expect(admin.locator("#kb-notice")).to_have_attribute("data-kind", "error")
    expect(admin.locator("#kb-notice")).to_contain_text("循环")

    # A rule whose words look like markup is shown as text.
    admin.locator("#kb-cat-topic").fill("水果")
    admin.locator("#kb-cat-members").fill("释迦\n<b>番荔枝</b>")
    admin.locator("#kb-cat-save").click()
    expect(admin.locator("#kb-notice")).to_contain_text("已保存类别规则“水果”")
    rule = admin.locator('#kb-cat-list .kb-rule[data-topic="水果"]')
    expect(rule).to_contain_text("释迦、<b>番荔枝</b>")
    expect(admin.locator("#kb-cat-list b")).to_have_count(0)
    expect(admin.locator("#kb-cat-empty")).to_be_hidden()

    # Edit it: the form takes the rule, saving replaces it.
    rule.locator(".kb-rule-edit").click()
    expect(admin.locator("#kb-cat-topic")).to_have_value("水果")
    expect(admin.locator("#kb-cat-members")).to_have_value("释迦\n<b>番荔枝</b>")
    admin.locator("#kb-cat-members").fill("释迦\n番荔枝")
    admin.locator("#kb-cat-save").click()
    expect(rule).to_contain_text("释迦、番荔枝")
    expect(admin.locator("#kb-cat-list .kb-rule")).to_have_count(1)

    rule.locator(".kb-rule-delete").click()
    expect(admin.locator("#kb-notice")).to_contain_text("已删除类别规则“水果”")
    expect(admin.locator("#kb-cat-list .kb-rule")).to_have_count(0)


def test_replace_import_asks_first(server: str, browser, tmp_path: Path) -> None:
    # Its own page: new_page fails a test on any dialog, and this one is meant.
    context = browser.new_context(locale="zh-CN")
    try:
        _replace_import_asks_first(context.new_page(), server, tmp_path)
    finally:
        context.close()


def _replace_import_asks_first(admin: Page, server: str, tmp_path: Path) -> None:
    sign_in(admin, server, "/console/kb")
    total = admin.locator("#kb-total")
    expect(total).to_contain_text("知识库 48 条")
    one = tmp_path / "one.csv"
    one.write_text("faq_id,question,answer\nonly,唯一的问题,唯一的答案\n", "utf-8")
    admin.locator('[data-kb-tab="files"]').click()
    admin.locator("#kb-import-file").set_input_files(str(one))
    admin.locator('#kb-import-form input[value="replace"]').check()

    asked: list[str] = []

    def answer(dialog: Any, yes: bool) -> None:
        asked.append(dialog.message)
        dialog.accept() if yes else dialog.dismiss()

    admin.once("dialog", lambda dialog: answer(dialog, False))
    admin.locator("#kb-import").click()
    expect(admin.locator("#kb-notice")).not_to_contain_text("已导入")
    assert len(asked) == 1 and "one.csv" in asked[0]
    admin.once("dialog", lambda dialog: answer(dialog, True))
    admin.locator("#kb-import").click()
    expect(admin.locator("#kb-notice")).to_contain_text("已导入 1 条，删除 48 条")
    admin.locator('[data-kb-tab="entries"]').click()
    expect(total).to_contain_text("知识库 1 条")


def test_admin_sees_report_cards_and_an_svg_chart(server: str, new_page) -> None:
    admin = new_page()
    sign_in(admin, server, "/console/kb")
    admin.locator("#reports-link").click()
    expect(admin).to_have_url(re.compile(r"/console/reports$"))
    cards = admin.locator("#reports-cards .report-card")
    expect(cards).to_have_count(6)
    expect(cards.first).to_contain_text("新会话")
    chart = admin.locator("#chart-conversations svg.chart")
    expect(chart).to_be_visible()
    expect(chart.locator("rect.bar")).to_have_count(14)  # 7 days, 2 series
    expect(admin.locator("#chart-answer-rate svg.chart")).to_be_visible()
    expect(admin.locator("#reports-daily tbody tr")).to_have_count(7)
    expect(admin.locator(f'#reports-agents tr[data-agent="{ADMIN}"]')).to_have_count(1)

    admin.locator('[data-days="30"]').click()
    expect(admin.locator("body")).to_have_attribute("data-loaded", "30")
    expect(admin.locator("#reports-daily tbody tr")).to_have_count(30)
    expect(admin.locator("#reports-notice")).to_be_hidden()
