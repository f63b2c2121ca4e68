"""The action ids of the buttons on Sentinel's Slack messages (what `POST
/slack/interactions` accepts) and the silence each makes. Apart from notify/slack.py so
that the interactivity endpoint, always routed, does not load slack-sdk (~3 MB, 45
modules) into a daemon that has no Slack notifier."""

from __future__ import annotations

SILENCE_ACTIONS = {"sentinel_silence_1h": "1h", "sentinel_silence_4h": "4h"}
ACK_ACTION, OPEN_ACTION = "sentinel_ack", "sentinel_open_dashboard"
