// pmon serial bridge, protocol version 1 (docs/protocol/serial-bridge.md), for an
// Arduino-class board (Uno, Nano, Leonardo, Pro Micro; any core with Wire.h).
//
// REFERENCE SKETCH: it has NOT been compiled or run by pmon's CI (no Arduino toolchain or
// board there). The protocol it implements is tested byte for byte in
// crates/bus/tests/bridge_wire.rs against the Rust implementation; compare with
// crates/bus/src/bridge/server.rs if in doubt.
//
// Wiring: SDA/SCL to the slave bus (A4/A5 on an Uno), with pull-ups to the bus voltage;
// USB to the host. Host config:
//   [[acquisition.bus]]
//   id = "usb0"
//   kind = "serial"
//   path = "/dev/ttyACM0"   # or /dev/ttyUSB0
//   baud = 115200

#include <Arduino.h>
#include <Wire.h>
#include <util/crc16.h>

static const uint8_t VERSION = 1;
static const uint8_t MAX_IO = 32;           // Wire's buffer on AVR
static const uint16_t MAX_BODY = 4 + 255 + 2; // header, payload, CRC
static const uint8_t FW_MAJOR = 0, FW_MINOR = 1, FW_PATCH = 0;

enum { OP_HELLO = 0x01, OP_WRITE = 0x02, OP_READ = 0x03, OP_WRITE_READ = 0x04, OP_RESET = 0x05, OP_SET_CLOCK = 0x06 };
enum { ST_OK = 0x80, ST_NACK = 0x81, ST_BUS_ERROR = 0x82, ST_REQUEST_CRC = 0x83, ST_MALFORMED = 0x84 };

static uint32_t clock_hz = 100000;

// Received COBS bytes of the frame being read.
static uint8_t rx[MAX_BODY + 4];
static uint16_t rx_len = 0;
static bool rx_overflow = false;

// The last request carried out and the reply sent (for retransmissions).
static uint8_t last_req[4 + 2 + MAX_IO + 2];
static uint8_t last_req_len = 0;
static uint8_t last_reply[4 + MAX_IO + 2];
static uint8_t last_reply_len = 0;

static uint16_t crc16(const uint8_t *data, uint16_t len) {
  uint16_t crc = 0xFFFF;
  while (len--) crc = _crc_xmodem_update(crc, *data++);
  return crc;
}

// Sends 00, COBS(body), 00 (the same encoder as crates/bus/src/bridge/frame.rs).
static void send_body(const uint8_t *body, uint16_t len) {
  static uint8_t block[254];
  uint8_t code = 1;
  Serial.write((uint8_t)0);
  for (uint16_t i = 0; i < len; i++) {
    if (code == 0xFF) {  // a full block of 254 bytes, more follow
      Serial.write(code);
      Serial.write(block, code - 1);
      code = 1;
    }
    if (body[i] == 0) {
      Serial.write(code);
      Serial.write(block, code - 1);
      code = 1;
    } else {
      block[code - 1] = body[i];
      code++;
    }
  }
  Serial.write(code);
  Serial.write(block, code - 1);
  Serial.write((uint8_t)0);
}

static uint8_t reply[4 + MAX_IO + 2];

static uint8_t build_reply(uint8_t tag, uint8_t type, const uint8_t *payload, uint8_t len) {
  reply[0] = VERSION;
  reply[1] = tag;
  reply[2] = type;
  reply[3] = len;
  for (uint8_t i = 0; i < len; i++) reply[4 + i] = payload[i];
  uint16_t crc = crc16(reply, 4 + len);
  reply[4 + len] = crc & 0xFF;
  reply[5 + len] = crc >> 8;
  return 6 + len;
}

static void answer(uint8_t tag, uint8_t type, const uint8_t *payload, uint8_t len, bool remember,
                   const uint8_t *req, uint8_t req_len) {
  uint8_t n = build_reply(tag, type, payload, len);
  send_body(reply, n);
  if (remember && req_len <= sizeof(last_req) && n <= sizeof(last_reply)) {
    memcpy(last_req, req, req_len);
    last_req_len = req_len;
    memcpy(last_reply, reply, n);
    last_reply_len = n;
  } else {
    last_req_len = 0;
  }
}

// Wire's endTransmission() result → reply type and payload byte.
static void wire_error(uint8_t code, uint8_t *type, uint8_t *byte) {
  switch (code) {
    case 2: *type = ST_NACK; *byte = 1; break;       // address NACK
    case 3: *type = ST_NACK; *byte = 2; break;       // data NACK
    case 5: *type = ST_BUS_ERROR; *byte = 4; break;  // timeout (setWireTimeout)
    default: *type = ST_BUS_ERROR; *byte = 1; break;
  }
}

// Nine clocks until SDA is released, then a STOP. Returns true when the bus is free.
static bool recover_bus() {
  Wire.end();
  pinMode(SDA, INPUT_PULLUP);
  pinMode(SCL, INPUT_PULLUP);
  for (uint8_t i = 0; i < 9 && digitalRead(SDA) == LOW; i++) {
    pinMode(SCL, OUTPUT); digitalWrite(SCL, LOW); delayMicroseconds(5);
    pinMode(SCL, INPUT_PULLUP); delayMicroseconds(5);
  }
  // STOP: SDA low → high while SCL is high.
  pinMode(SDA, OUTPUT); digitalWrite(SDA, LOW); delayMicroseconds(5);
  pinMode(SCL, INPUT_PULLUP); delayMicroseconds(5);
  pinMode(SDA, INPUT_PULLUP); delayMicroseconds(5);
  bool free = digitalRead(SDA) == HIGH && digitalRead(SCL) == HIGH;
  Wire.begin();
  Wire.setClock(clock_hz);
  Wire.setWireTimeout(25000, true);
  return free;
}

static void handle(const uint8_t *body, uint16_t len) {
  if (len < 6 || body[3] != len - 6) { answer(len > 1 ? body[1] : 0, ST_REQUEST_CRC, 0, 0, false, 0, 0); return; }
  uint16_t crc = crc16(body, len - 2);
  if ((crc & 0xFF) != body[len - 2] || (crc >> 8) != body[len - 1]) {
    answer(body[1], ST_REQUEST_CRC, 0, 0, false, 0, 0);
    return;
  }
  uint8_t tag = body[1], type = body[2], n = body[3];
  const uint8_t *p = body + 4;
  // A retransmission of the request last carried out: the cached reply, the bus untouched.
  if (last_req_len == len && memcmp(last_req, body, len) == 0) {
    send_body(last_reply, last_reply_len);
    return;
  }
  uint8_t out[MAX_IO + 11];
  if (body[0] != VERSION) { out[0] = 5; out[1] = VERSION; answer(tag, ST_MALFORMED, out, 2, false, 0, 0); return; }
  switch (type) {
    case OP_HELLO: {
      if (n < 1) break;
      out[0] = VERSION; out[1] = MAX_IO; out[2] = MAX_IO; out[3] = 0x03;
      out[4] = clock_hz; out[5] = clock_hz >> 8; out[6] = clock_hz >> 16; out[7] = clock_hz >> 24;
      out[8] = FW_MAJOR; out[9] = FW_MINOR; out[10] = FW_PATCH;
      last_req_len = 0;
      answer(tag, ST_OK, out, 11, false, 0, 0);
      return;
    }
    case OP_WRITE: {
      if (n < 1) break;
      if (p[0] > 0x7F) { out[0] = 4; answer(tag, ST_MALFORMED, out, 1, false, 0, 0); return; }
      if (n - 1 > MAX_IO) { out[0] = 3; answer(tag, ST_MALFORMED, out, 1, false, 0, 0); return; }
      Wire.beginTransmission(p[0]);
      Wire.write(p + 1, n - 1);
      uint8_t code = Wire.endTransmission(true);
      if (code == 0) { answer(tag, ST_OK, 0, 0, true, body, len); return; }
      uint8_t t, b; wire_error(code, &t, &b); answer(tag, t, &b, 1, true, body, len);
      return;
    }
    case OP_READ:
    case OP_WRITE_READ: {
      bool write_first = type == OP_WRITE_READ;
      if (n < 2 || p[1] == 0 || (write_first && n < 3) || (!write_first && n != 2)) break;
      if (p[0] > 0x7F) { out[0] = 4; answer(tag, ST_MALFORMED, out, 1, false, 0, 0); return; }
      uint8_t count = p[1];
      if (count > MAX_IO || (write_first && n - 2 > MAX_IO)) { out[0] = 3; answer(tag, ST_MALFORMED, out, 1, false, 0, 0); return; }
      if (write_first) {
        Wire.beginTransmission(p[0]);
        Wire.write(p + 2, n - 2);
        uint8_t code = Wire.endTransmission(false);  // repeated start follows
        if (code != 0) { uint8_t t, b; wire_error(code, &t, &b); answer(tag, t, &b, 1, true, body, len); return; }
      }
      uint8_t got = Wire.requestFrom(p[0], count, (uint8_t)true);
      if (got == 0) { uint8_t b = 1; answer(tag, Wire.getWireTimeoutFlag() ? ST_BUS_ERROR : ST_NACK, &b, 1, true, body, len); return; }
      for (uint8_t i = 0; i < count; i++) out[i] = Wire.available() ? Wire.read() : 0xFF;
      answer(tag, ST_OK, out, count, true, body, len);
      return;
    }
    case OP_RESET: {
      if (n != 0) break;
      out[0] = recover_bus() ? 1 : 0;
      answer(tag, ST_OK, out, 1, true, body, len);
      return;
    }
    case OP_SET_CLOCK: {
      if (n != 4) break;
      uint32_t hz = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
      clock_hz = hz > 400000 ? 400000 : (hz < 10000 ? 10000 : hz);
      Wire.setClock(clock_hz);
      out[0] = clock_hz; out[1] = clock_hz >> 8; out[2] = clock_hz >> 16; out[3] = clock_hz >> 24;
      answer(tag, ST_OK, out, 4, true, body, len);
      return;
    }
    default:
      out[0] = 1;  // unknown type
      answer(tag, ST_MALFORMED, out, 1, false, 0, 0);
      return;
  }
  out[0] = 2;  // bad length
  answer(tag, ST_MALFORMED, out, 1, false, 0, 0);
}

// COBS-decodes rx[0..rx_len] in place into body; returns its length, or -1 if broken.
static int16_t cobs_decode(uint8_t *body) {
  uint16_t i = 0, o = 0;
  while (i < rx_len) {
    uint8_t code = rx[i];
    if (code == 0 || i + code > rx_len) return -1;
    for (uint8_t k = 1; k < code; k++) body[o++] = rx[i + k];
    i += code;
    if (code != 0xFF && i < rx_len) body[o++] = 0;
  }
  return o;
}

void setup() {
  Serial.begin(115200);
  Wire.begin();
  Wire.setClock(clock_hz);
  Wire.setWireTimeout(25000, true);  // a stuck bus must not hang the bridge
}

void loop() {
  while (Serial.available()) {
    uint8_t byte = Serial.read();
    if (byte != 0) {
      if (rx_len < sizeof(rx)) rx[rx_len++] = byte; else rx_overflow = true;
      continue;
    }
    if (rx_len == 0 && !rx_overflow) continue;  // idle delimiter
    static uint8_t body[MAX_BODY + 2];
    int16_t len = rx_overflow ? -1 : cobs_decode(body);
    if (len < 0) answer(0, ST_REQUEST_CRC, 0, 0, false, 0, 0);
    else handle(body, (uint16_t)len);
    rx_len = 0;
    rx_overflow = false;
  }
}
