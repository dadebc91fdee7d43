/**
 * JavaScript source, for the small servers tests run inside sandboxes (no npm packages there):
 * a WebSocket server-side handshake and frame codec. It defines
 *
 *   acceptWebSocket(req, socket, onFrame)  answers the upgrade, then calls onFrame(op, payload)
 *                                          for each complete (unmasked) frame
 *   sendFrame(socket, op, payload)         writes one unmasked frame of any length
 *
 * and expects `crypto` to be the node:crypto module in the including source.
 */
export const GUEST_WEBSOCKET_SOURCE = String.raw`
function acceptWebSocket(req, socket, onFrame) {
  const accept = crypto.createHash("sha1")
    .update(req.headers["sec-websocket-key"] + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest("base64");
  socket.write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
    "Sec-WebSocket-Accept: " + accept + "\r\n\r\n");
  let buf = Buffer.alloc(0);
  socket.on("data", (d) => {
    buf = Buffer.concat([buf, d]);
    for (;;) {
      if (buf.length < 2) return;
      const op = buf[0] & 15;
      let len = buf[1] & 127;
      let off = 2;
      if (len === 126) { if (buf.length < 4) return; len = buf.readUInt16BE(2); off = 4; }
      else if (len === 127) { if (buf.length < 10) return; len = Number(buf.readBigUInt64BE(2)); off = 10; }
      const mask = buf[1] & 128 ? buf.subarray(off, off + 4) : null;
      if (mask) off += 4;
      if (buf.length < off + len) return;
      const payload = Buffer.from(buf.subarray(off, off + len));
      buf = buf.subarray(off + len);
      if (mask) for (let i = 0; i < payload.length; i++) payload[i] ^= mask[i & 3];
      onFrame(op, payload);
    }
  });
}
function sendFrame(socket, op, payload) {
  let head;
  if (payload.length < 126) head = Buffer.from([0x80 | op, payload.length]);
  else if (payload.length < 65536) { head = Buffer.alloc(4); head[0] = 0x80 | op; head[1] = 126; head.writeUInt16BE(payload.length, 2); }
  else { head = Buffer.alloc(10); head[0] = 0x80 | op; head[1] = 127; head.writeBigUInt64BE(BigInt(payload.length), 2); }
  socket.write(Buffer.concat([head, payload]));
}
`;
