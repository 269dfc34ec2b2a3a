// The proxy's own HTTP/2 (h2-frames.ts, h2-session.ts) without sockets: frames cut anywhere read
// back whole; two sessions joined in memory exchange heads, bodies and trailers with flow
// control (a receiver that does not consume is never sent more than its window, and everything
// comes once it does); PING, SETTINGS and limits; and random or corrupted bytes end a session
// with an error, never an exception.

import fc from 'fast-check'
import t from 'tap'
import {
  ErrorCode,
  Flag,
  FrameReader,
  type FrameSink,
  FrameType,
  frameHeader,
  type Http2Error,
  headerFrames,
  PREFACE,
} from '../proxy/http2/h2-frames.js'
import {
  type FrameOut,
  H2Session,
  type H2Stream,
  HeaderList,
  type SessionHandler,
  type SessionLimits,
} from '../proxy/http2/h2-session.js'

type Frame = { type: number; flags: number; stream: number; payload: string }

function frame(type: number, flags: number, stream: number, payload: Buffer): Buffer {
  const out = Buffer.alloc(9 + payload.length)
  frameHeader(out, 0, payload.length, type, flags, stream)
  payload.copy(out, 9)
  return out
}

function reader(expectPreface: boolean): { r: FrameReader; frames: Frame[] } {
  const frames: Frame[] = []
  const sink: FrameSink = {
    onFrame: (type, flags, stream, src, start, end) => {
      frames.push({ type, flags, stream, payload: src.toString('hex', start, end) })
      return null
    },
  }
  return { r: new FrameReader(sink, expectPreface), frames }
}

const frameArb = fc
  .tuple(fc.nat(12), fc.nat(255), fc.nat(2 ** 31 - 1), fc.uint8Array({ maxLength: 3000 }))
  .map(([type, flags, stream, p]) => frame(type, flags, stream, Buffer.from(p)))

t.test('frames cut at any points read back whole and in order, after the preface', async () => {
  fc.assert(
    fc.property(fc.array(frameArb, { maxLength: 8 }), fc.array(fc.nat(), { maxLength: 10 }), (frames, cuts) => {
      const bytes = Buffer.concat([PREFACE, ...frames])
      const whole = reader(true)
      if (whole.r.push(bytes, 0, bytes.length) !== null) return false
      const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b)
      const cut = reader(true)
      let at = 0
      for (const p of [...points, bytes.length]) {
        if (cut.r.push(bytes, at, p) !== null) return false
        at = p
      }
      return JSON.stringify(cut.frames) === JSON.stringify(whole.frames) && whole.frames.length === frames.length
    }),
    { numRuns: 300 },
  )
})

t.test('a bad preface and a frame above the maximum size are errors with their codes', async (t) => {
  const { r } = reader(true)
  const bad = Buffer.from('GET / HTTP/1.1\r\n')
  t.match(r.push(bad, 0, bad.length), { code: ErrorCode.PROTOCOL_ERROR })
  const big = reader(false)
  const header = Buffer.alloc(9)
  frameHeader(header, 0, 16_385, FrameType.DATA, 0, 1)
  t.match(big.r.push(header, 0, 5), null, 'not known yet')
  t.match(big.r.push(header, 5, 9), { code: ErrorCode.FRAME_SIZE_ERROR }, 'known once the header is whole')
})

t.test(
  'a header block above the frame size goes as HEADERS and CONTINUATIONs that read back as the block',
  async (t) => {
    const block = Buffer.from(Array.from({ length: 40_000 }, (_, i) => i % 251))
    const out = Buffer.alloc(9 + block.length)
    block.copy(out, 9)
    const frames = headerFrames(out, out.length, 5, true, 16_384)
    const { r, frames: read } = reader(false)
    t.equal(r.push(frames, 0, frames.length), null)
    t.same(
      read.map((f) => [f.type, f.flags, f.stream]),
      [
        [FrameType.HEADERS, Flag.END_STREAM, 5],
        [FrameType.CONTINUATION, 0, 5],
        [FrameType.CONTINUATION, Flag.END_HEADERS, 5],
      ],
    )
    t.equal(read.map((f) => f.payload).join(''), block.toString('hex'))
  },
)

/** Frames to a peer session, delivered on the next turn (as a socket would). */
class Pipe implements FrameOut {
  peer: H2Session | null = null
  private held: Buffer[] = []
  private holding = false
  ended = false
  bytes = 0

  hold(): void {
    this.holding = true
  }

  release(): void {
    this.holding = false
    this.flush()
  }

  write(frame: Buffer): boolean {
    this.held.push(frame)
    if (!this.holding) this.flush()
    return true
  }

  end(): void {
    this.release()
    this.ended = true
  }

  private flush(): void {
    if (this.held.length === 0) return
    const bytes = Buffer.concat(this.held)
    this.held = []
    this.bytes += bytes.length
    setImmediate(() => this.peer?.receive(bytes, 0, bytes.length))
  }
}

interface Seen {
  heads: Array<{ stream: number; fields: Array<[string, string]>; end: boolean }>
  data: Map<number, number>
  ended: Set<number>
  resets: Array<[number, number]>
  closed: number[]
  sessionEnd: Http2Error | null | undefined
  streams: Map<number, H2Stream>
}

function handler(consume: (s: H2Stream, n: number) => void): { h: SessionHandler; seen: Seen } {
  const seen: Seen = {
    heads: [],
    data: new Map(),
    ended: new Set(),
    resets: [],
    closed: [],
    sessionEnd: undefined,
    streams: new Map(),
  }
  const h: SessionHandler = {
    onReadStart: () => undefined,
    onReadEnd: () => undefined,
    onHeaders: (s: H2Stream, f: HeaderList, end: boolean) => {
      seen.streams.set(s.id, s)
      seen.heads.push({ stream: s.id, fields: f.names.map((n, i) => [n, f.values[i]!]), end })
      if (end) seen.ended.add(s.id)
    },
    onData: (s, _src, start, end, endStream) => {
      seen.data.set(s.id, (seen.data.get(s.id) ?? 0) + end - start)
      if (endStream) seen.ended.add(s.id)
      consume(s, end - start)
    },
    onSent: () => undefined,
    onReset: (s, code) => void seen.resets.push([s.id, code]),
    onStreamClosed: (s) => void seen.closed.push(s.id),
    onGoaway: () => undefined,
    onSessionEnd: (e) => void (seen.sessionEnd = e),
  }
  return { h, seen }
}

const LIMITS: SessionLimits = {
  maxConcurrentStreams: 100,
  streamWindow: 65_535,
  connectionWindow: 65_535,
  maxHeaderListSize: 16_384,
  maxHeaderFields: 104,
  maxHeaderBlock: 65_536,
}
const settle = (): Promise<void> => new Promise((r) => setTimeout(r, 20))

function pair(serverConsume: (server: H2Session) => (s: H2Stream, n: number) => void, limits = LIMITS) {
  const toServer = new Pipe()
  const toClient = new Pipe()
  let server: H2Session | null = null
  const sh = handler((s, n) => serverConsume(server!)(s, n))
  const ch = handler((s, n) => client.consume(s, n))
  server = new H2Session('server', toClient, sh.h, limits)
  const client: H2Session = new H2Session('client', toServer, ch.h, limits)
  toServer.peer = server
  toClient.peer = client
  server.start()
  client.start()
  return { server, client, serverSeen: sh.seen, clientSeen: ch.seen, toServer, toClient }
}

const REQUEST: Array<[string, string]> = [
  [':method', 'POST'],
  [':scheme', 'http'],
  [':path', '/upload'],
  [':authority', 'deathstar'],
]

t.test(
  'a body larger than every window: the sender never sends past what the receiver consumed, and all of it arrives with its trailers',
  async (t) => {
    let consuming = false
    const owed: Array<[H2Stream, number]> = []
    const p = pair((server) => (s, n) => (consuming ? server.consume(s, n) : void owed.push([s, n])))
    const s = p.client.request(HeaderList.of(REQUEST), false)!
    const body = Buffer.alloc(300_000, 7)
    t.equal(p.client.sendData(s, body, 0, body.length, false), 65_535, 'a window went at once')
    p.client.sendHeaders(s, HeaderList.of([['x-checksum', 'abc']]), true)
    await settle()
    t.equal(p.serverSeen.data.get(1), 65_535, 'the receiver holds one window, not consumed')
    t.equal(p.serverSeen.heads.length, 1, 'the trailers wait behind the body')
    consuming = true
    for (const [st, n] of owed.splice(0)) p.server.consume(st, n)
    for (let i = 0; i < 50 && !p.serverSeen.ended.has(1); i++) await settle()
    t.equal(p.serverSeen.data.get(1), body.length, 'then every byte came')
    t.same(
      p.serverSeen.heads.at(-1),
      { stream: 1, fields: [['x-checksum', 'abc']], end: true },
      'and the trailers after it',
    )
    const reply = p.serverSeen.streams.get(1)!
    p.server.sendHeaders(reply, HeaderList.of([[':status', '200']]), false)
    p.server.sendData(reply, Buffer.from('done'), 0, 4, true)
    await settle()
    t.same(p.clientSeen.heads[0], { stream: 1, fields: [[':status', '200']], end: false })
    t.equal(p.clientSeen.data.get(1), 4)
    t.same([p.clientSeen.closed, p.serverSeen.closed], [[1], [1]], 'closed on both sides')
    t.equal(p.server.openStreams + p.client.openStreams, 0)
  },
)

t.test(
  'streams past the concurrency limit are refused; a reset reaches the peer; GOAWAY ends the session once its streams are done',
  async (t) => {
    const p = pair((server) => (s, n) => server.consume(s, n), { ...LIMITS, maxConcurrentStreams: 2 })
    p.client.peerMaxStreams = 10 // as if the server allowed more: the server's own limit holds
    const streams = [0, 1, 2].map(() => p.client.request(HeaderList.of(REQUEST), false)!)
    await settle()
    t.same(p.clientSeen.resets, [[5, ErrorCode.REFUSED_STREAM]], 'the third stream is refused')
    p.client.reset(streams[0]!, ErrorCode.CANCEL)
    await settle()
    t.same(p.serverSeen.resets, [[1, ErrorCode.CANCEL]], 'the reset arrives with its code')
    p.server.goaway(ErrorCode.NO_ERROR)
    await settle()
    t.equal(p.serverSeen.sessionEnd, undefined, 'a stream is still open')
    p.client.endStream(streams[1]!)
    p.server.endStream(p.serverSeen.streams.get(3)!)
    await settle()
    t.equal(p.serverSeen.sessionEnd, null, 'the session ended cleanly once it was done')
    t.equal(p.client.request(HeaderList.of(REQUEST), true), null, 'no stream is opened after GOAWAY')
  },
)

t.test('PING is answered; a header block past its bound or a CONTINUATION flood ends the connection', async (t) => {
  const p = pair((server) => (s, n) => server.consume(s, n))
  let answered = false
  p.client.ping(() => (answered = true))
  await settle()
  t.ok(answered, 'the PING came back')
  const flood = pair((server) => (s, n) => server.consume(s, n))
  await settle()
  const frames = [frame(FrameType.HEADERS, 0, 1, Buffer.from([0x82]))]
  for (let i = 0; i < 20; i++) frames.push(frame(FrameType.CONTINUATION, 0, 1, Buffer.from([0x82])))
  const bytes = Buffer.concat(frames)
  flood.server.receive(bytes, 0, bytes.length)
  t.match(flood.serverSeen.sessionEnd, { code: ErrorCode.ENHANCE_YOUR_CALM }, 'a CONTINUATION flood')
  const big = pair((server) => (s, n) => server.consume(s, n), { ...LIMITS, maxHeaderBlock: 1000 })
  await settle()
  const block = frame(FrameType.HEADERS, 0, 1, Buffer.alloc(1001, 0x82))
  big.server.receive(block, 0, block.length)
  t.match(big.serverSeen.sessionEnd, { code: ErrorCode.ENHANCE_YOUR_CALM }, 'a block past its bound')
})

t.test(
  'HPACK state follows a table size the peer changed; a list past its size limit is marked, the connection kept',
  async (t) => {
    const p = pair((server) => (s, n) => server.consume(s, n), { ...LIMITS, maxHeaderListSize: 300 })
    for (let i = 0; i < 5; i++) p.client.request(HeaderList.of([...REQUEST, ['x-n', String(i)]]), true)
    p.client.request(HeaderList.of([...REQUEST, ['x-big', 'b'.repeat(300)]]), true)
    p.client.request(HeaderList.of([...REQUEST, ['x-n', 'after']]), true)
    await settle()
    const heads = p.serverSeen.heads
    t.same(
      heads.slice(0, 5).map((h) => h.fields.at(-1)),
      [0, 1, 2, 3, 4].map((i) => ['x-n', String(i)]),
    )
    t.same(heads[6]!.fields.at(-1), ['x-n', 'after'], 'decoding went on after the big list')
    t.equal(heads[5]!.fields.length, 4, 'the big list kept only what fitted')
  },
)

t.test(
  'random bytes, and valid frames corrupted, end a session with an error or leave it up, never throw',
  async () => {
    const settings = frame(FrameType.SETTINGS, 0, 0, Buffer.alloc(0))
    fc.assert(
      fc.property(
        fc.array(frameArb, { maxLength: 6 }),
        fc.uint8Array({ maxLength: 200 }),
        fc.nat(),
        (frames, noise, at) => {
          const { h } = handler(() => undefined)
          const out: FrameOut = {
            hold: () => undefined,
            release: () => undefined,
            write: () => true,
            end: () => undefined,
          }
          const s = new H2Session('server', out, h, LIMITS)
          s.start()
          const bytes = Buffer.concat([PREFACE, settings, ...frames, Buffer.from(noise)])
          if (bytes.length > 0) bytes[at % bytes.length] ^= 0x5a
          s.receive(bytes, 0, bytes.length)
          return true
        },
      ),
      { numRuns: 2000 },
    )
  },
)
