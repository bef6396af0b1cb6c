"""A Slack click is bound to the action its message showed: the button's hash goes to the gateway as the decision's
``action_hash``, so a click on a message older than an edit is refused and the clicker is told to reload (the real
loop, the Slack router and a local fake Slack Web API, as in tests/serving/test_slack_bot.py)."""

from __future__ import annotations

import json

import pytest

from serving.slack_blocks import APPROVE
from tests.serving import test_slack_bot as slack_tests
from tests.serving.test_slack_fake import blocks_of, button_click, sign

pytestmark = [pytest.mark.timeout(300), pytest.mark.anyio]
bot = slack_tests.bot  # the fixture


async def test_a_click_on_a_message_older_than_an_edit_is_refused(bot: slack_tests.Bot) -> None:
    ap = await bot.pending()
    await bot.notifier.step()
    [post] = bot.fake.of("chat.postMessage")
    old_button = slack_tests.value_of(post)
    assert json.loads(old_button)["h"] == ap["action_hash"]
    edited = await bot.loop.gateway.edit(ap["approval_id"], {"supply_c": ap["action"]["supply_c"] - 1}, "oscar",
                                         "http", "one degree colder")
    assert edited.approval is not None, edited
    new_hash = edited.approval.action_hash

    r = await bot.post(body := button_click("UALICE", APPROVE, old_button), sign(body))
    assert r.status_code == 200
    [told] = await slack_tests.eventually(lambda: bot.fake.of("chat.postEphemeral"))
    assert told["user"] == "UALICE" and "the action changed since you saw it; reload" in told["text"]
    after = await bot.approval(ap["approval_id"])
    assert after["status"] == "pending" and after["decisions"] == []

    # the message is shown again with the action as it is now; its button decides it
    [update] = await slack_tests.eventually(lambda: bot.fake.of("chat.update"))
    [actions] = [b for b in blocks_of(update) if b["type"] == "actions"]
    new_button = actions["elements"][0]["value"]
    assert json.loads(new_button)["h"] == new_hash
    r = await bot.post(body := button_click("UALICE", APPROVE, new_button), sign(body))
    assert r.status_code == 200
    done = await slack_tests.eventually(lambda: len(bot.fake.of("chat.update")) >= 2)
    assert done
    after = await bot.approval(ap["approval_id"])
    assert after["status"] == "executed" and after["decisions"][0]["channel"] == "slack"
    assert after["decisions"][0]["client"] == "slack user UALICE"
