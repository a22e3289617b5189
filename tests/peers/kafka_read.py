#!/usr/bin/env python3
"""Read a Kafka topic from the beginning with kafka-python (a real consumer) and print
each record as one JSON line: {"partition", "offset", "key", "value"}. Stops after
--count records or --timeout seconds. With --cafile it connects over TLS."""
import argparse
import json
import sys

from kafka import KafkaConsumer

p = argparse.ArgumentParser()
p.add_argument("--bootstrap", required=True)
p.add_argument("--topic", required=True)
p.add_argument("--count", type=int, required=True)
p.add_argument("--timeout", type=float, default=30.0)
p.add_argument("--cafile", help="connect with TLS, trusting this CA")
args = p.parse_args()
tls = dict(security_protocol="SSL", ssl_cafile=args.cafile, ssl_check_hostname=True) if args.cafile else {}

consumer = KafkaConsumer(
    args.topic,
    bootstrap_servers=args.bootstrap,
    auto_offset_reset="earliest",
    enable_auto_commit=False,
    consumer_timeout_ms=int(args.timeout * 1000),
    **tls,
)
seen = 0
for record in consumer:
    print(json.dumps({
        "partition": record.partition,
        "offset": record.offset,
        "key": record.key.decode() if record.key is not None else None,
        "value": json.loads(record.value),
    }), flush=True)
    seen += 1
    if seen >= args.count:
        break
consumer.close()
sys.exit(0 if seen >= args.count else 1)
