#!/usr/bin/env python3
"""A third-party MQTT client for pmon's interop test (paho-mqtt, as Home Assistant uses).

Usage: mqtt_client.py --port N --topic FILTER [--topic FILTER …] --seconds S
                      [--birth-after S] [--birth-topic homeassistant/status] --out FILE

Subscribes (QoS 1) to every FILTER, records every message for S seconds and, after
--birth-after seconds, publishes Home Assistant's birth message (`online`, QoS 0, not
retained, as Home Assistant does). Writes one JSON object per line to FILE:
{"t": seconds since subscribed, "topic": …, "retain": bool, "payload": text or null,
"binary": base64 when the payload is not UTF-8}, and a {"birth": t} line when it sent the
birth message.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import threading
import time

import paho.mqtt.client as mqtt


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--topic", action="append", required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--birth-after", type=float)
    parser.add_argument("--birth-topic", default="homeassistant/status")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    lines: list[dict] = []
    lock = threading.Lock()
    subscribed = threading.Event()
    start = [time.monotonic()]

    def on_connect(client, _userdata, _flags, reason_code, _properties):
        if reason_code.is_failure:
            print(f"connect failed: {reason_code}", file=sys.stderr)
            return
        client.subscribe([(topic, 1) for topic in args.topic])

    def on_subscribe(_client, _userdata, _mid, _reason_codes, _properties):
        start[0] = time.monotonic()
        subscribed.set()

    def on_message(_client, _userdata, message):
        entry = {
            "t": round(time.monotonic() - start[0], 3),
            "topic": message.topic,
            "retain": bool(message.retain),
        }
        try:
            entry["payload"] = message.payload.decode("utf-8")
        except UnicodeDecodeError:
            entry["payload"] = None
            entry["binary"] = base64.b64encode(message.payload).decode("ascii")
        with lock:
            lines.append(entry)

    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=f"paho-interop-{time.time_ns()}"
    )
    client.max_inflight_messages_set(1000)
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect(args.host, args.port, keepalive=30)
    client.loop_start()
    if not subscribed.wait(10):
        print("no SUBACK within 10 s", file=sys.stderr)
        return 1
    if args.birth_after is not None:
        time.sleep(args.birth_after)
        # Noted before sending: the answer may be recorded before publish() returns.
        with lock:
            lines.append({"birth": round(time.monotonic() - start[0], 3)})
        client.publish(args.birth_topic, "online", qos=0, retain=False).wait_for_publish(5)
    remaining = args.seconds - (time.monotonic() - start[0])
    if remaining > 0:
        time.sleep(remaining)
    client.disconnect()
    client.loop_stop()
    with lock, open(args.out, "w", encoding="utf-8") as out:
        for entry in lines:
            out.write(json.dumps(entry) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
