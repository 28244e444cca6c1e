// Broadcast server with Node's `ws`: every message any client sends goes to every
// connected client (the broadcast example from the ws README), compression off as
// in the other peers.
//
//   usage: node server.js [PORT]      (default 9200, on 127.0.0.1)
'use strict';
const { WebSocketServer, WebSocket } = require('ws');

const port = Number(process.argv[2] || 9200);
const wss = new WebSocketServer({ host: '127.0.0.1', port, perMessageDeflate: false });

wss.on('connection', (ws) => {
  ws.on('error', () => {});
  ws.on('message', (data, isBinary) => {
    for (const client of wss.clients) {
      if (client.readyState === WebSocket.OPEN) {
        client.send(data, { binary: isBinary });
      }
    }
  });
});
wss.on('listening', () => console.error(`node-ws listening on ws://127.0.0.1:${port}/`));
