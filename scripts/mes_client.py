"""The MES stand-in's MQTT side, shared by the fleet and soak scripts: a stock paho MQTT 5
client with a persistent session (clean_start off, one-hour session expiry), as a real MES
subscribes, so that verdicts published while it reconnects are kept by the broker."""

from __future__ import annotations

from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


def persistent_subscriber(
    client_id: str,
    port: int,
    subscriptions: list[tuple[str, int]],
    on_message: Callable[[mqtt.Client, object, mqtt.MQTTMessage], None],
) -> mqtt.Client:
    """Connect to the broker on 127.0.0.1:``port``, (re)subscribe on every connect, start the loop."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.reconnect_delay_set(0.1, 1.0)
    client.on_connect = lambda c, u, f, rc, p: c.subscribe(subscriptions)
    client.on_message = on_message
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    client.connect("127.0.0.1", port, keepalive=10, clean_start=False, properties=props)
    client.loop_start()
    return client
