import assert from "node:assert/strict";
import type { Principal } from "../../src/auth/principal.ts";
import { type SessionLimits, SessionRegistry, WsSession } from "../../src/ws/session.ts";

/** Unit tests of WsSession and SessionRegistry with a fake socket and a fake clock. */

class FakeSocket {
  readyState: number = WebSocket.OPEN;
  bufferedAmount = 0;
  readonly sent: string[] = [];
  send(text: string) {
    this.sent.push(text);
  }
  get frames(): Array<Record<string, unknown>> {
    return this.sent.map((t) => JSON.parse(t));
  }
  get ids(): number[] {
    return this.frames.map((f) => f.event_id as number);
  }
  asSocket(): WebSocket {
    return this as unknown as WebSocket;
  }
}

class FakeClock {
  constructor(public t = 1_000) {}
  now = () => this.t;
}

const alice: Principal = { user_id: "alice", tenant_id: "t1", roles: ["user"], mode: "byok" };
const limits = (over: Partial<SessionLimits> = {}): SessionLimits => ({
  replayFrames: 100,
  maxBufferedBytes: 1_000,
  resumeWindowMs: 60_000,
  ...over,
});

function session(over: Partial<SessionLimits> = {}, clock = new FakeClock()) {
  const ended: WsSession[] = [];
  const s = new WsSession("chat", alice, limits(over), clock, (x) => ended.push(x));
  return { s, ended, clock };
}

const tick = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(check: () => boolean, what: string, timeoutMs = 2_000) {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`gave up waiting for ${what}`);
    await tick(5);
  }
}

Deno.test("WsSession: ids, defaults and activity", () => {
  const clock = new FakeClock(42);
  const { s } = session({}, clock);
  assert.match(s.id, /^wss_[0-9a-f]{32}$/);
  assert.notEqual(s.id, session().s.id);
  assert.equal(s.kind, "chat");
  assert.equal(s.principal, alice);
  assert.equal(s.attached, false);
  assert.equal(s.ended, false);
  assert.equal(s.reconnects, 0);
  assert.equal(s.inflight.size, 0);
  assert.equal(s.lastActivity, 42);
  clock.t = 99;
  s.attach(new FakeSocket().asSocket());
  assert.equal(s.lastActivity, 99, "attaching counts as activity");
  assert.equal(s.attached, true);
  s.end();
});

Deno.test("WsSession: every frame gets the next event_id and the clock's timestamp", () => {
  const { s, clock } = session();
  const sock = new FakeSocket();
  s.attach(sock.asSocket());
  assert.equal(s.send({ type: "session.ready", session_id: s.id }), true);
  clock.t = 2_000;
  assert.equal(s.send({ type: "chat.token", request_id: "r", text: "a" }), true);
  clock.t = 3_000;
  assert.equal(s.send({ type: "chat.complete", request_id: "r" }), true);
  assert.deepEqual(sock.frames, [
    { type: "session.ready", session_id: s.id, event_id: 1, timestamp_ms: 1_000 },
    { type: "chat.token", request_id: "r", text: "a", event_id: 2, timestamp_ms: 2_000 },
    { type: "chat.complete", request_id: "r", event_id: 3, timestamp_ms: 3_000 },
  ]);
  // A frame cannot forge its own id or time.
  s.send({ type: "x", event_id: 999, timestamp_ms: 1 });
  assert.deepEqual(sock.frames[3], { type: "x", event_id: 4, timestamp_ms: 3_000 });
  s.end();
});

Deno.test("WsSession: while detached, or with the socket not open, frames are kept, not sent", () => {
  const { s } = session();
  assert.equal(s.send({ type: "a" }), true, "detached: kept for resume");
  const sock = new FakeSocket();
  sock.readyState = WebSocket.CLOSING;
  s.attach(sock.asSocket());
  assert.equal(s.send({ type: "b" }), true);
  sock.readyState = WebSocket.CLOSED;
  assert.equal(s.send({ type: "c" }), true);
  sock.readyState = WebSocket.CONNECTING;
  assert.equal(s.send({ type: "d" }), true);
  assert.deepEqual(sock.sent, []);
  const next = new FakeSocket();
  assert.equal(s.attach(next.asSocket(), 0), true);
  assert.deepEqual(next.ids, [1, 2, 3, 4]);
  assert.deepEqual(next.frames.map((f) => f.type), ["a", "b", "c", "d"]);
  s.end();
});

Deno.test("WsSession: attach replays exactly the frames after lastEventId", () => {
  const { s } = session();
  const first = new FakeSocket();
  s.attach(first.asSocket());
  for (let i = 0; i < 5; i++) s.send({ type: "chat.token", text: String(i) });
  s.detach(first.asSocket());
  assert.equal(s.attached, false);
  s.send({ type: "chat.token", text: "5" });
  s.send({ type: "chat.complete" });
  assert.equal(first.sent.length, 5, "nothing sent to a detached socket");

  const second = new FakeSocket();
  assert.equal(s.attach(second.asSocket(), 3), true);
  assert.deepEqual(second.ids, [4, 5, 6, 7]);
  s.send({ type: "live" });
  assert.deepEqual(second.ids, [4, 5, 6, 7, 8], "then live frames follow");

  // Resuming with everything seen replays nothing and loses nothing.
  const third = new FakeSocket();
  assert.equal(s.attach(third.asSocket(), 8), true);
  assert.deepEqual(third.sent, []);
  // An id from the future replays nothing either.
  const fourth = new FakeSocket();
  assert.equal(s.attach(fourth.asSocket(), 50), true);
  assert.deepEqual(fourth.sent, []);
  // Without lastEventId (a fresh attach) nothing is replayed.
  const fifth = new FakeSocket();
  assert.equal(s.attach(fifth.asSocket()), true);
  assert.deepEqual(fifth.sent, []);
  s.end();
});

Deno.test("WsSession: frames lost when the replay ring dropped some after lastEventId", () => {
  const { s } = session({ replayFrames: 3 });
  for (let i = 1; i <= 6; i++) s.send({ type: "t", n: i });
  // The ring holds 4, 5, 6.
  for (
    const [last, complete] of [[0, false], [1, false], [2, false], [3, true], [5, true]] as const
  ) {
    const sock = new FakeSocket();
    assert.equal(s.attach(sock.asSocket(), last), complete, `lastEventId ${last}`);
    assert.deepEqual(sock.ids, [4, 5, 6].filter((id) => id > last), `replay after ${last}`);
  }
  s.end();
});

Deno.test("WsSession: a fresh session resumed from 0 loses nothing", () => {
  const { s } = session({ replayFrames: 2 });
  const empty = new FakeSocket();
  assert.equal(s.attach(empty.asSocket(), 0), true, "no frames yet");
  s.send({ type: "a" });
  s.send({ type: "b" });
  const sock = new FakeSocket();
  assert.equal(s.attach(sock.asSocket(), 0), true, "the ring still has frame 1");
  assert.deepEqual(sock.ids, [1, 2]);
  s.send({ type: "c" });
  const late = new FakeSocket();
  assert.equal(s.attach(late.asSocket(), 0), false, "frame 1 is gone");
  assert.deepEqual(late.ids, [2, 3]);
  s.end();
});

Deno.test("WsSession: send returns false once unsent bytes pass maxBufferedBytes", () => {
  const { s } = session({ maxBufferedBytes: 100 });
  const sock = new FakeSocket();
  s.attach(sock.asSocket());
  sock.bufferedAmount = 100;
  assert.equal(s.send({ type: "chat.token", text: "at the limit" }), true);
  sock.bufferedAmount = 101;
  assert.equal(s.send({ type: "chat.token", text: "over" }), false);
  assert.equal(sock.sent.length, 1, "a frame over the limit is not written");
  sock.bufferedAmount = 0;
  assert.equal(s.send({ type: "chat.token", text: "drained" }), true);
  assert.deepEqual(sock.ids, [1, 3], "the refused frame still used its id");
  // ...and is kept for a resume.
  const again = new FakeSocket();
  s.attach(again.asSocket(), 1);
  assert.deepEqual(again.ids, [2, 3]);
  s.end();
});

Deno.test("WsSession: detach ends the session after the resume window", async () => {
  const { s, ended } = session({ resumeWindowMs: 30 });
  const sock = new FakeSocket();
  s.attach(sock.asSocket());
  const ac = new AbortController();
  s.inflight.set("r1", ac);
  s.detach(sock.asSocket());
  assert.equal(s.ended, false, "the window is open");
  await until(() => s.ended, "the session to end");
  assert.deepEqual(ended, [s]);
  assert.equal(ac.signal.aborted, true, "ending cancels what is in flight");
});

Deno.test("WsSession: a resume within the window keeps the session", async () => {
  const { s, ended } = session({ resumeWindowMs: 30 });
  const old = new FakeSocket();
  s.attach(old.asSocket());
  s.detach(old.asSocket());
  const fresh = new FakeSocket();
  s.attach(fresh.asSocket(), 0);
  await tick(80);
  assert.equal(s.ended, false);
  assert.deepEqual(ended, []);
  // The old socket closing late does not detach the new one.
  s.detach(old.asSocket());
  await tick(80);
  assert.equal(s.ended, false);
  assert.equal(s.attached, true);
  s.end();
  assert.deepEqual(ended, [s]);
});

Deno.test("WsSession: detaching a socket that is not attached does nothing", async () => {
  const { s } = session({ resumeWindowMs: 20 });
  const sock = new FakeSocket();
  s.attach(sock.asSocket());
  s.detach(new FakeSocket().asSocket());
  await tick(60);
  assert.equal(s.ended, false);
  assert.equal(s.attached, true);
  s.end();
});

Deno.test("WsSession: end aborts every in-flight controller, once", () => {
  const { s, ended } = session();
  const a = new AbortController();
  const b = new AbortController();
  s.inflight.set("a", a);
  s.inflight.set("b", b);
  s.end();
  assert.equal(a.signal.aborted, true);
  assert.equal(b.signal.aborted, true);
  assert.match(String((a.signal.reason as Error).message), /session ended/);
  assert.equal(s.ended, true);
  s.end();
  assert.equal(ended.length, 1, "onEnd runs once");
});

Deno.test("WsSession: end clears a pending expiry", async () => {
  const { s, ended } = session({ resumeWindowMs: 20 });
  const sock = new FakeSocket();
  s.attach(sock.asSocket());
  s.detach(sock.asSocket());
  s.end();
  await tick(50);
  assert.equal(ended.length, 1);
});

const principal = (tenant_id: string, user_id: string): Principal => ({
  tenant_id,
  user_id,
  roles: ["user"],
  mode: "byok",
});

Deno.test("SessionRegistry: find returns only the caller's own live session of that kind", () => {
  const reg = new SessionRegistry(limits(), new FakeClock());
  const s = reg.create("chat", principal("t1", "alice"));
  const v = reg.create("voice", principal("t1", "alice"));
  assert.equal(reg.size, 2);
  assert.equal(reg.find(s.id, "chat", principal("t1", "alice")), s);
  assert.equal(
    reg.find(s.id, "chat", { ...principal("t1", "alice"), mode: "managed", roles: ["admin"] }),
    s,
    "the same user with another token",
  );
  assert.equal(reg.find(s.id, "chat", principal("t1", "bob")), undefined, "another user");
  assert.equal(reg.find(s.id, "chat", principal("t2", "alice")), undefined, "another tenant");
  assert.equal(reg.find(s.id, "voice", principal("t1", "alice")), undefined, "another kind");
  assert.equal(reg.find(v.id, "voice", principal("t1", "alice")), v);
  assert.equal(reg.find("wss_unknown", "chat", principal("t1", "alice")), undefined);

  s.end();
  assert.equal(reg.find(s.id, "chat", principal("t1", "alice")), undefined, "an ended session");
  assert.equal(reg.size, 1, "an ended session is forgotten");
  v.end();
  assert.equal(reg.size, 0);
});

Deno.test("SessionRegistry: sessions it creates share its limits and clock", () => {
  const clock = new FakeClock(7);
  const reg = new SessionRegistry(limits({ replayFrames: 1 }), clock);
  const s = reg.create("voice", principal("t1", "u"));
  assert.equal(s.kind, "voice");
  assert.equal(s.lastActivity, 7);
  s.send({ type: "a" });
  s.send({ type: "b" });
  const sock = new FakeSocket();
  assert.equal(s.attach(sock.asSocket(), 0), false, "a ring of one frame");
  assert.deepEqual(sock.ids, [2]);
  assert.equal(sock.frames[0].timestamp_ms, 7);
  s.end();
});

Deno.test("SessionRegistry: endAll ends every session and waits for in-flight work to drain", async () => {
  const reg = new SessionRegistry(limits(), new FakeClock());
  const sessions = [
    reg.create("chat", principal("t1", "a")),
    reg.create("voice", principal("t2", "b")),
  ];
  const settled: string[] = [];
  for (const [i, s] of sessions.entries()) {
    for (const id of ["r1", "r2"]) {
      const ac = new AbortController();
      s.inflight.set(id, ac);
      // Like runChat: the cancelled request settles a little later, then leaves inflight.
      ac.signal.addEventListener("abort", () => {
        setTimeout(() => {
          settled.push(`${i}:${id}`);
          s.inflight.delete(id);
        }, 30 + 10 * i);
      });
    }
  }
  await reg.endAll();
  assert.deepEqual(settled.sort(), ["0:r1", "0:r2", "1:r1", "1:r2"]);
  assert.ok(sessions.every((s) => s.ended && s.inflight.size === 0));
  assert.equal(reg.size, 0);
});

Deno.test("SessionRegistry: endAll gives up after its timeout when a request never settles", async () => {
  const reg = new SessionRegistry(limits(), new FakeClock());
  const s = reg.create("chat", principal("t1", "a"));
  s.inflight.set("stuck", new AbortController());
  await reg.endAll(30);
  assert.equal(s.ended, true);
  assert.equal(s.inflight.size, 1, "returned without it");
  assert.equal(reg.size, 0);
});

Deno.test("SessionRegistry: endAll with nothing live returns at once", async () => {
  const reg = new SessionRegistry(limits(), new FakeClock());
  await reg.endAll();
  assert.equal(reg.size, 0);
});

Deno.test("active WebSocket sessions are exported per kind", async () => {
  const { startGateway } = await import("../support/gateway.ts");
  const gw = await startGateway();
  try {
    const token = await gw.token();
    const ws = new WebSocket(gw.url.replace("http", "ws") + "/v1/ws", [
      "convergio.v1",
      `bearer.${token}`,
    ]);
    await new Promise((resolve) => (ws.onmessage = resolve));
    const live = await (await fetch(`${gw.url}/metrics`)).text();
    assert.match(live, /convergio_ws_active_sessions\{kind="chat"\} 1/);
    assert.match(live, /convergio_ws_active_sessions\{kind="voice"\} 0/);
    const closed = new Promise((resolve) => (ws.onclose = resolve));
    ws.close(1000);
    await closed;
    for (let i = 0; i < 50; i++) {
      if (
        /convergio_ws_active_sessions\{kind="chat"\} 0/.test(
          await (await fetch(`${gw.url}/metrics`)).text(),
        )
      ) return;
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.fail("the session was not counted out after a normal close");
  } finally {
    await gw.close();
  }
});
