"""A Sparkplug B host application for the tests: subscribes to everything under
spBv1.0/, decodes every payload with the Sparkplug protobuf schema
(sparkplug_b.proto, compiled here with grpc_tools) and prints one JSON line per
message on stdout. Commands on stdin, one per line:
  rebirth GROUP NODE        publish NCMD Node Control/Rebirth = true
  state HOST online|offline publish the retained Sparkplug 3.0 STATE message
Usage: sparkplug_host.py PORT
"""
import json
import os
import sys
import tempfile
import threading

from grpc_tools import protoc
import paho.mqtt.client as mqtt

here = os.path.dirname(os.path.abspath(__file__))
out = tempfile.mkdtemp()
if protoc.main(["protoc", f"-I{here}", f"--python_out={out}", os.path.join(here, "sparkplug_b.proto")]) != 0:
    sys.exit("protoc failed")
sys.path.insert(0, out)
import sparkplug_b_pb2  # noqa: E402

port = int(sys.argv[1])
client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-host-app")


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def on_connect(c, userdata, flags, reason, properties):
    c.subscribe("spBv1.0/#", qos=1)


def on_subscribe(c, userdata, mid, reasons, properties):
    emit({"ready": True})


def on_message(c, userdata, msg):
    if "/STATE/" in msg.topic:
        return
    p = sparkplug_b_pb2.Payload()
    p.ParseFromString(msg.payload)
    metrics = []
    for m in p.metrics:
        kind = m.WhichOneof("value")
        metrics.append({
            "name": m.name if m.HasField("name") else None,
            "alias": m.alias if m.HasField("alias") else None,
            "datatype": m.datatype,
            "historical": m.is_historical,
            "timestamp": m.timestamp,
            "value": getattr(m, kind) if kind else None,
        })
    emit({
        "topic": msg.topic,
        "seq": p.seq if p.HasField("seq") else None,
        "timestamp": p.timestamp,
        "metrics": metrics,
    })


client.on_connect = on_connect
client.on_subscribe = on_subscribe
client.on_message = on_message
client.connect("127.0.0.1", port)


def commands():
    for line in sys.stdin:
        words = line.split()
        if words[:1] == ["rebirth"]:
            p = sparkplug_b_pb2.Payload()
            m = p.metrics.add()
            m.name = "Node Control/Rebirth"
            m.datatype = 11
            m.boolean_value = True
            client.publish(f"spBv1.0/{words[1]}/NCMD/{words[2]}", p.SerializeToString(), qos=0)
        elif words[:1] == ["state"]:
            body = json.dumps({"online": words[2] == "online", "timestamp": 0})
            client.publish(f"spBv1.0/STATE/{words[1]}", body, qos=1, retain=True)
        emit({"done": words})
    os._exit(0)


threading.Thread(target=commands, daemon=True).start()
client.loop_forever()
