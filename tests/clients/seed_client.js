// The Node.js example of websocket-api.md, verbatim (the test substitutes the URL).
const WebSocket = require("ws");

const ws = new WebSocket("ws://localhost:18904/ws");

ws.on("open", () => {
  console.log("Connected to WebSocket");
});

ws.on("message", (data) => {
  const message = JSON.parse(data);

  if (message.type === "metrics_update") {
    console.log("Metrics update:", Object.keys(message.data).length, "servers");
  } else if (message.type === "alert") {
    console.log("Alert:", message.subject);
  }
});

ws.on("error", (error) => {
  console.error("WebSocket error:", error);
});

ws.on("close", () => {
  console.log("WebSocket closed");
});
