#!/usr/bin/env python3
"""Checks pmon's Home Assistant discovery messages with Home Assistant's own code.

Usage: check_discovery.py MESSAGES.json [--prefix homeassistant] [--state STATE.json]

MESSAGES.json is a list of {"topic": ..., "payload": ...} (payload: the JSON text). Each
message goes the way Home Assistant's MQTT integration takes it
(homeassistant/components/mqtt/discovery.py: topic matcher, abbreviation expansion, the
device discovery schema and the merging of shared options into each component), then
through the sensor platform's DISCOVERY_SCHEMA (homeassistant/components/mqtt/sensor.py),
exactly as the integration sets an entity up.

Home Assistant 2025.4 only logs some mistakes that later versions reject (a unit that does
not fit the device class is refused from 2025.7), and its discovery schema silently drops
keys it does not know. So, beyond the schema, this counts as errors: any warning the
integration logs, a key the schema dropped, a unit or state class outside the sensor
component's own tables (DEVICE_CLASS_UNITS, DEVICE_CLASS_STATE_CLASSES in
homeassistant/components/sensor/const.py), a duplicate unique_id, and (with --state) a
value_template that does not render to a number from a real state message.

Exit status 0 when every message passes, 1 otherwise (the errors on stdout).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import logging
import sys

import tempfile

import voluptuous as vol
from homeassistant.components.mqtt import discovery
from homeassistant.components.mqtt.schemas import DEVICE_DISCOVERY_SCHEMA
from homeassistant.components.mqtt.sensor import DISCOVERY_SCHEMA as SENSOR_SCHEMA
from homeassistant.components.sensor.const import (
    DEVICE_CLASS_STATE_CLASSES,
    DEVICE_CLASS_UNITS,
    SensorDeviceClass,
    SensorStateClass,
)
from homeassistant.const import __version__ as HA_VERSION
from homeassistant.core import HomeAssistant
from homeassistant.helpers import frame


class Collect(logging.Handler):
    """Keeps every warning Home Assistant's code logs."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(f"{record.name}: {record.getMessage()}")


def check_sensor(where: str, config: dict, errors: list[str], seen_ids: set[str],
                 state: dict | None) -> None:
    """One sensor's configuration, after abbreviation expansion and merging."""
    supplied = set(config)
    try:
        validated = SENSOR_SCHEMA(copy.deepcopy(config))
    except vol.Invalid as err:
        errors.append(f"{where}: rejected by the MQTT sensor schema: {err}")
        return
    dropped = supplied - set(validated)
    if dropped:
        errors.append(f"{where}: keys Home Assistant does not know (dropped): {sorted(dropped)}")
    device_class = validated.get("device_class")
    unit = validated.get("unit_of_measurement")
    state_class = validated.get("state_class")
    if device_class is not None:
        device_class = SensorDeviceClass(device_class)
        if device_class in DEVICE_CLASS_UNITS and unit not in DEVICE_CLASS_UNITS[device_class]:
            allowed = sorted(str(u) for u in DEVICE_CLASS_UNITS[device_class])
            errors.append(
                f"{where}: unit {unit!r} is not valid for device class {device_class.value} "
                f"(Home Assistant accepts {allowed})"
            )
        if (device_class in DEVICE_CLASS_STATE_CLASSES and state_class is not None
                and SensorStateClass(state_class) not in DEVICE_CLASS_STATE_CLASSES[device_class]):
            errors.append(
                f"{where}: state class {state_class} is not valid for device class "
                f"{device_class.value}"
            )
    unique_id = validated.get("unique_id")
    if not unique_id:
        errors.append(f"{where}: no unique_id")
    elif unique_id in seen_ids:
        errors.append(f"{where}: duplicate unique_id {unique_id}")
    else:
        seen_ids.add(unique_id)
    if not validated.get("device", {}).get("identifiers"):
        errors.append(f"{where}: no device identifiers")
    if validated.get("availability_mode") != "all" or len(validated.get("availability", [])) != 2:
        errors.append(f"{where}: availability is not bound to both pmon topics")
    if state is not None:
        # Rendered by Home Assistant's template engine, as the MQTT sensor renders it.
        template = validated.get("value_template")
        text = template.async_render_with_possible_json_value(json.dumps(state), None)
        try:
            float(text)
        except (TypeError, ValueError):
            errors.append(f"{where}: value_template {template.template!r} renders {text!r}")


def check(messages: list[dict], prefix: str, state: dict | None) -> tuple[list[str], int]:
    """Every message; returns the errors and the number of sensors checked."""
    errors: list[str] = []
    seen_ids: set[str] = set()
    sensors = 0
    for message in messages:
        topic, payload = message["topic"], message["payload"]
        if not topic.startswith(prefix + "/"):
            errors.append(f"{topic}: not under the discovery prefix {prefix}")
            continue
        match = discovery.TOPIC_MATCHER.match(topic[len(prefix) + 1:])
        if not match:
            errors.append(f"{topic}: Home Assistant ignores this topic (illegal characters)")
            continue
        component = match.group("component")
        try:
            body = json.loads(payload)
        except ValueError as err:
            errors.append(f"{topic}: not JSON: {err}")
            continue
        if component == "device":
            discovery._replace_all_abbreviations(body)
            try:
                DEVICE_DISCOVERY_SCHEMA(copy.deepcopy(body))
            except vol.Invalid as err:
                errors.append(f"{topic}: rejected by the device discovery schema: {err}")
                continue
            for component_id, config in body["components"].items():
                platform = config.pop("platform")
                where = f"{topic} [{component_id}]"
                if platform != "sensor":
                    errors.append(f"{where}: platform {platform}, expected sensor")
                    continue
                config["device"] = body["device"]
                config["origin"] = body.get("origin")
                discovery._merge_common_device_options(config, body)
                check_sensor(where, config, errors, seen_ids, state)
                sensors += 1
        elif component == "sensor":
            body = discovery.MQTTDiscoveryPayload(body)
            discovery._replace_all_abbreviations(body)
            if not discovery._valid_origin_info(body):
                errors.append(f"{topic}: invalid origin")
                continue
            check_sensor(topic, dict(body), errors, seen_ids, state)
            sensors += 1
        else:
            errors.append(f"{topic}: unexpected component {component}")
    return errors, sensors


async def check_in_hass(messages: list[dict], prefix: str,
                        state: dict | None) -> tuple[list[str], int]:
    """Runs the check where Home Assistant's validators expect to run: in its event loop,
    with a (not started) HomeAssistant instance."""
    with tempfile.TemporaryDirectory() as config_dir:
        hass = HomeAssistant(config_dir)
        frame.async_setup(hass)
        try:
            return check(messages, prefix, state)
        finally:
            await hass.async_stop(force=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("messages")
    parser.add_argument("--prefix", default="homeassistant")
    parser.add_argument("--state", help="a JSON state message to render the templates with")
    args = parser.parse_args()
    with open(args.messages, encoding="utf-8") as file:
        messages = json.load(file)
    state = None
    if args.state:
        with open(args.state, encoding="utf-8") as file:
            state = json.load(file)
    collect = Collect()
    logging.getLogger("homeassistant").addHandler(collect)
    logging.getLogger("homeassistant").setLevel(logging.WARNING)
    errors, sensors = asyncio.run(check_in_hass(messages, args.prefix, state))
    errors.extend(f"Home Assistant logged: {line}" for line in collect.records)
    if not messages:
        errors.append("no discovery message to check")
    for error in errors:
        print(f"ERROR {error}")
    print(
        f"checked {len(messages)} discovery messages ({sensors} sensors) with Home Assistant "
        f"{HA_VERSION}: {'ok' if not errors else f'{len(errors)} errors'}"
    )
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
