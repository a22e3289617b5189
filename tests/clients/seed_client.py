# The Python example of websocket-api.md, verbatim (the test substitutes the URL).
import asyncio
import websockets
import json

async def connect():
    uri = "ws://localhost:18904/ws"
    async with websockets.connect(uri) as websocket:
        print("Connected to WebSocket")

        while True:
            try:
                message = await websocket.recv()
                data = json.loads(message)

                if data['type'] == 'metrics_update':
                    print(f"Metrics update: {len(data['data'])} servers")
                elif data['type'] == 'alert':
                    print(f"Alert: {data['subject']}")

            except websockets.exceptions.ConnectionClosed:
                print("Connection closed")
                break

asyncio.run(connect())
