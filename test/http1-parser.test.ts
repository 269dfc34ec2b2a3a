// The HTTP/1.1 parser (llhttp's WebAssembly build) as the proxy drives it: heads the same however
// the bytes are cut into reads, the header-size limit, pipelined messages, responses without a
// body, bodies that end with the connection, and the strict errors llhttp names.

import { EventEmitter } from 'node:events'
import { createRequire } from 'node:module'
import type { Socket } from 'node:net'
import fc from 'fast-check'
import t from 'tap'
import { Http1Parser, type MessageHead } from '../proxy/http/http1-parser.js'
import { llhttp } from '../proxy/http/llhttp-wasm.js'
import { standInParser } from './fixtures/stand-in-parser.js'

type Event = (string | number | boolean)[]

/** A parser fed by hand, and what it reported. */
function parser(
  kind: 'request' | 'response',
  maxHeaderBytes = 16 * 1024,
  skipBody = false,
): { feed: (...chunks: string[]) => void; finish: () => void; events: Event[] } {
  const events: Event[] = []
  const p = standInParser(
    kind,
    {
      onReadStart: () => undefined,
      onReadEnd: (e) => void (e && events.push(['error', e.code, e.reason ?? ''])),
      onMessageBegin: () => void events.push(['begin']),
      onHead: (h: MessageHead) => {
        events.push([
          'head',
          h.method,
          h.url,
          h.status,
          h.reason,
          h.versionMinor,
          h.keepAlive,
          h.upgrade,
          ...h.fields.toRaw(),
        ])
        return skipBody
      },
      onBody: (b) => void events.push(['body', b.toString('latin1')]),
      onMessageComplete: () => void events.push(['complete']),
    },
    maxHeaderBytes,
  )
  return { ...p, events }
}

const REQUEST =
  'POST /v1/a%20b?x=1 HTTP/1.1\r\nHost: deathstar.empire\r\nX-Empty:\r\nX-Long-Header-Name: a value, with spaces\r\nX-Blank: \r\nX-Trail: v \t\r\nContent-Length: 5\r\n\r\nhello'

t.test(
  'a request gives the same head and body however its bytes are cut into reads (values without trailing whitespace)',
  async (t) => {
    const whole = parser('request')
    whole.feed(REQUEST)
    t.same(whole.events, [
      ['begin'],
      [
        'head',
        'POST',
        '/v1/a%20b?x=1',
        0,
        '',
        1,
        true,
        false,
        'Host',
        'deathstar.empire',
        'X-Empty',
        '',
        'X-Long-Header-Name',
        'a value, with spaces',
        'X-Blank',
        '',
        'X-Trail',
        'v',
        'Content-Length',
        '5',
      ],
      ['body', 'hello'],
      ['complete'],
    ])
    const heads = (e: Event[]): Event[] => e.filter((x) => x[0] !== 'body')
    const body = (e: Event[]): string =>
      e
        .filter((x) => x[0] === 'body')
        .map((x) => x[1])
        .join('')
    let cuts = 0
    for (let i = 1; i < REQUEST.length; i++) {
      for (let j = i; j < REQUEST.length; j += 5) {
        const p = parser('request')
        p.feed(REQUEST.slice(0, i), REQUEST.slice(i, j), REQUEST.slice(j))
        if (JSON.stringify(heads(p.events)) !== JSON.stringify(heads(whole.events)) || body(p.events) !== 'hello')
          t.fail(`cut at ${i} and ${j}: ${JSON.stringify(p.events)}`)
        cuts++
      }
    }
    t.ok(cuts > 1000, `${cuts} ways of cutting it agree`)
  },
)

t.test('a head larger than the limit is an error; one at the limit is not', async (t) => {
  // What counts: the URL, header names and values (as node's parser counts them).
  const head = (valueBytes: number): string => `GET /abc HTTP/1.1\r\nHost: ${'h'.repeat(valueBytes)}\r\n\r\n`
  const limit = 4 + 4 + 100
  const at = parser('request', limit)
  at.feed(head(100))
  t.equal(at.events[1]?.[0], 'head')
  const over = parser('request', limit)
  over.feed(head(101))
  t.same(over.events, [['begin'], ['error', 'HPE_HEADER_OVERFLOW', 'Header overflow']])
  const slow = parser('request', limit)
  slow.feed(...head(101).split(''))
  t.same(slow.events.at(-1), ['error', 'HPE_HEADER_OVERFLOW', 'Header overflow'], 'also when it comes a byte at a time')
  slow.feed('GET / HTTP/1.1\r\n\r\n')
  t.equal(slow.events.length, 2, 'after an error nothing more is parsed')
})

t.test(
  'a head stays readable while its handler makes parsers (the parser memory may grow and move meanwhile)',
  async (t) => {
    const socket = Object.assign(new EventEmitter(), { pause: () => undefined, resume: () => undefined })
    const seen: string[][] = []
    const made: Http1Parser[] = []
    const sink = {
      onReadStart: () => undefined,
      onReadEnd: () => undefined,
      onBody: () => undefined,
      onMessageComplete: () => undefined,
    }
    const p = new Http1Parser('request', 16 * 1024, {
      ...sink,
      onHead: (h: MessageHead) => {
        // As the proxy opens an upstream connection (and its parser) before it writes the head on.
        for (let i = 0; i < 2000; i++)
          made.push(new Http1Parser('response', 16 * 1024, { ...sink, onHead: () => false }))
        seen.push(h.fields.toRaw())
        return false
      },
    })
    p.readFrom(socket as unknown as Socket)
    const memory = llhttp().fn.memory
    const before = memory.buffer.byteLength
    socket.emit(
      'data',
      Buffer.from(`GET / HTTP/1.1\r\nHost: deathstar\r\nX-Long: ${'v'.repeat(2000)}\r\n\r\n`, 'latin1'),
    )
    socket.emit('data', Buffer.from('GET / HTTP/1.1\r\nHost: death', 'latin1'))
    socket.emit('data', Buffer.from('star\r\n\r\n', 'latin1'))
    made.forEach((m) => m.close())
    t.ok(memory.buffer.byteLength > before, 'the memory grew while heads were handled')
    t.same(seen, [
      ['Host', 'deathstar', 'X-Long', 'v'.repeat(2000)],
      ['Host', 'deathstar'],
    ])
  },
)

t.test('pipelined requests in one read come out one by one, HTTP/1.0 not kept alive', async (t) => {
  const p = parser('request')
  p.feed(
    'GET / HTTP/1.1\r\nHost: a\r\n\r\nDELETE /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /y HTTP/1.0\r\n\r\n',
  )
  t.same(
    p.events.filter((e) => e[0] === 'head').map((e) => [e[1], e[2], e[6]]),
    [
      ['GET', '/', true],
      ['DELETE', '/x', true],
      ['GET', '/y', false],
    ],
  )
  t.same(
    p.events.filter((e) => e[0] === 'body'),
    [['body', 'abc']],
  )
  t.equal(p.events.filter((e) => e[0] === 'complete').length, 3)
})

t.test(
  'responses: status and reason; no body when the sink says so; a body to the end of the connection',
  async (t) => {
    const head = parser('response', 16 * 1024, true)
    head.feed('HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\n')
    t.same(
      head.events.filter((e) => e[0] === 'head').map((e) => [e[3], e[4]]),
      [
        [200, 'OK'],
        [404, 'Not Found'],
      ],
      'a response to HEAD carries no body: the next starts right after its head',
    )
    const eof = parser('response')
    eof.feed('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\npart one, ', 'part two')
    t.notOk(
      eof.events.some((e) => e[0] === 'complete'),
      'not complete while the connection is open',
    )
    eof.finish()
    t.same(eof.events.slice(-3), [['body', 'part one, '], ['body', 'part two'], ['complete']])
    const cut = parser('response')
    cut.feed('HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc')
    cut.finish()
    t.equal(cut.events.at(-1)?.[0], 'error', 'a body cut short by the end of the connection is an error')
  },
)

t.test('strict: the errors llhttp names', async (t) => {
  const cases: Array<[string, string]> = [
    ['GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n', 'HPE_UNEXPECTED_CONTENT_LENGTH'],
    ['GET / HTTP/1.1\nHost: a\r\n\r\n', 'HPE_INVALID_VERSION'],
    ['GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n  folded\r\n\r\n', 'HPE_INVALID_HEADER_TOKEN'],
    ['GET / HTTP/1.1\r\nHo st: a\r\n\r\n', 'HPE_INVALID_HEADER_TOKEN'],
    [
      'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n',
      'HPE_INVALID_TRANSFER_ENCODING',
    ],
  ]
  for (const [bytes, code] of cases) {
    const p = parser('request')
    p.feed(bytes)
    const err = p.events.find((e) => e[0] === 'error')
    t.equal(err?.[1], code, JSON.stringify(bytes))
    t.notOk(
      p.events.some((e) => e[0] === 'head'),
      'and no head',
    )
  }
})

t.test('an upgrade request stops the parser without an error', async (t) => {
  const p = parser('request')
  p.feed('GET /chat HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n\x00\x01binary')
  t.equal(p.events.find((e) => e[0] === 'head')?.[7], true, 'the head says upgrade')
  t.notOk(p.events.some((e) => e[0] === 'error'))
  p.feed('more bytes that are not HTTP')
  t.notOk(
    p.events.some((e) => e[0] === 'error'),
    'nor later',
  )
})

// The parser this one replaced: node's own llhttp binding, driven as node:http drives it.
interface NativeParser {
  initialize(type: number, resource: object, maxHeaderSize: number, lenient: number): void
  execute(data: Buffer): number | { code: string }
  [callback: number]: (...args: never[]) => unknown
}
const { HTTPParser, methods } = createRequire(import.meta.url)('node:_http_common') as {
  HTTPParser: {
    new (): NativeParser
    REQUEST: number
    RESPONSE: number
    kOnHeadersComplete: number
    kOnBody: number
    kOnMessageComplete: number
    kLenientNone: number
  }
  methods: string[]
}

/** What node's parser makes of `bytes`: heads, bodies and completions, then its error, if any. */
function nodeParse(bytes: string, kind: 'request' | 'response' = 'request'): Event[] {
  const events: Event[] = []
  const p = new HTTPParser()
  p.initialize(kind === 'request' ? HTTPParser.REQUEST : HTTPParser.RESPONSE, {}, 16 * 1024, HTTPParser.kLenientNone)
  p[HTTPParser.kOnHeadersComplete] = (
    _major: number,
    minor: number,
    raw: string[],
    method: number | undefined,
    url: string | undefined,
    status: number | undefined,
    reason: string | undefined,
    upgrade: boolean,
    keepAlive: boolean,
  ) => {
    events.push([
      'head',
      method === undefined ? '' : methods[method]!,
      url ?? '',
      status ?? 0,
      reason ?? '',
      minor,
      keepAlive,
      upgrade,
      ...raw,
    ])
    return 0
  }
  p[HTTPParser.kOnBody] = (b: Buffer) => void events.push(['body', b.toString('latin1')])
  p[HTTPParser.kOnMessageComplete] = () => void events.push(['complete'])
  const r = p.execute(Buffer.from(bytes, 'latin1'))
  if (typeof r !== 'number') events.push(['error', r.code])
  return events
}

/** Mostly well-formed pieces, each now and then replaced by a malformed one. */
const piece = (good: string[], bad: string[]): fc.Arbitrary<string> =>
  fc.oneof({ weight: 8, arbitrary: fc.constantFrom(...good) }, { weight: 1, arbitrary: fc.constantFrom(...bad) })

/**
 * Events compared between the two parsers: error codes may be named differently between llhttp
 * versions, where each stops may not; a body may come in more pieces. After an upgrade's head nothing counts: node hands the
 * socket over (ignoring errors in what follows), the proxy refuses upgrades and reads no further.
 */
function shape(e: Event[]): string {
  const events: Event[] = []
  for (const x of e) {
    const last = events.at(-1)
    if (x[0] === 'begin') continue
    // A body read in two pieces is the same body.
    if (x[0] === 'body' && last?.[0] === 'body') last[1] = `${last[1] as string}${x[1] as string}`
    else events.push(x[0] === 'error' ? ['error'] : [...x])
  }
  const upgrade = events.findIndex((x) => x[0] === 'head' && x[7] === true)
  return JSON.stringify(upgrade < 0 ? events : events.slice(0, upgrade + 1))
}

/**
 * A head with an empty Transfer-Encoding: the vendored llhttp hands it on and request-head.ts
 * refuses it (400), where the llhttp of Node 24 and 26 (9.4) already fails to parse it. The same
 * while the head is not complete yet: node has failed already, ours waits for the rest of the
 * head (and refuses it then).
 */
function refusedAfterParsing(events: Event[], bytes: string): boolean {
  if (events.every((e) => e[0] === 'begin')) return /\ntransfer-encoding:[ \t]*\r?(\n|$)/i.test(bytes)
  return events.some((e) => {
    if (e[0] !== 'head') return false
    for (let i = 8; i + 1 < e.length; i += 2)
      if (String(e[i]).toLowerCase() === 'transfer-encoding' && String(e[i + 1]).trim() === '') return true
    return false
  })
}

/**
 * Runs `runs` messages from `message` through both parsers (ours reading each in two pieces,
 * cut anywhere) and asserts they agree; how many node's accepted.
 */
function differential(
  kind: 'request' | 'response',
  start: fc.Arbitrary<string[]>,
  header: fc.Arbitrary<string[]>,
  eol: fc.Arbitrary<string>,
  body: fc.Arbitrary<string>,
  runs: number,
): number {
  const message = fc
    .tuple(start, fc.array(header, { maxLength: 4 }), eol, body)
    .map(([l, hs, end, b]) => l.join('') + hs.map((h) => h.join('')).join('') + end + b)
  let accepted = 0
  fc.assert(
    fc.property(message, fc.nat(), (bytes, at) => {
      const cut = at % (bytes.length + 1)
      const ours = parser(kind)
      ours.feed(bytes.slice(0, cut), bytes.slice(cut))
      const theirs = nodeParse(bytes, kind)
      if (!theirs.some((e) => e[0] === 'error')) accepted++
      return (
        shape(ours.events) === shape(theirs) ||
        (kind === 'request' && refusedAfterParsing(ours.events, bytes) && theirs.some((e) => e[0] === 'error'))
      )
    }),
    { numRuns: runs },
  )
  return accepted
}

t.test(
  'what it accepts, and how it reads it, is what node:http reads (differential, 10000 generated requests)',
  async (t) => {
    const eol = piece(['\r\n'], ['\n', '\r', '\r\n ', '\r\n\t'])
    const line = fc.tuple(
      piece(['GET', 'POST', 'PUT', 'HEAD', 'OPTIONS', 'DELETE'], ['CONNECT', 'GeT', 'G T', '']),
      fc.constantFrom(' '),
      piece(['/', '/a?b=c', '/v1/x', '*'], ['/a b', '/%zz', 'http://x/y', '/a\tb', '/\u00e9', 'x:1']),
      piece([' HTTP/1.1', ' HTTP/1.0'], [' HTTP/1.2', ' HTTP/2.0', '', ' http/1.1']),
      eol,
    )
    const header = fc.tuple(
      piece(
        ['Host', 'Content-Length', 'Transfer-Encoding', 'X-A', 'Connection', 'Upgrade'],
        ['Ho st', 'X\u0000', '', 'X\u00e9'],
      ),
      piece([': ', ':', ':\t'], [' : ', ' :']),
      piece(
        ['5', '0', 'chunked', 'gzip, chunked', 'keep-alive', 'close', 'upgrade', 'x y ', 'a\t', '\u00e9', ''],
        ['-1', '+5', '5, 5', 'chunked, identity', 'a\u0000b', 'a\rb'],
      ),
      eol,
    )
    const body = fc.constantFrom(
      '',
      'hello',
      '5\r\nhello\r\n0\r\n\r\n',
      '0\r\n\r\n',
      'zz\r\n',
      '5\nhello\n0\n\n',
      'GET / HTTP/1.1\r\nHost: a\r\n\r\n',
    )
    const accepted = differential('request', line, header, eol, body, 10_000)
    t.ok(accepted > 500, `${accepted} of them accepted by both`)
  },
)

t.test(
  'responses too: what it accepts and how it frames them is what node:http does (differential, 5000 generated)',
  async (t) => {
    const eol = piece(['\r\n'], ['\n', '\r\n '])
    const status = fc.tuple(
      piece(['HTTP/1.1 ', 'HTTP/1.0 '], ['HTTP/1.2 ', 'HTTP/1.1', 'http/1.1 ']),
      piece(['200', '204', '304', '404', '101'], ['99', '1000', '2x0']),
      piece([' OK', ' Not Found', ''], [' \u00e9', ' a\u0000']),
      eol,
    )
    const header = fc.tuple(
      piece(['Content-Length', 'Transfer-Encoding', 'Connection', 'Keep-Alive', 'X-A'], ['Content Length', '']),
      piece([': '], [' : ']),
      piece(
        ['5', '0', 'chunked', 'gzip, chunked', 'keep-alive', 'close', 'timeout=5'],
        ['-1', '5, 6', 'chunked, gzip', 'a\u0000'],
      ),
      eol,
    )
    const body = fc.constantFrom(
      '',
      'hello',
      '5\r\nhello\r\n0\r\n\r\n',
      '0\r\n\r\n',
      '5\r\nhelloXX',
      'HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n',
    )
    const accepted = differential('response', status, header, eol, body, 5000)
    t.ok(accepted > 500, `${accepted} of them accepted by both`)
  },
)

/** A request parser read through 'data' events whose heads (method, url) and errors are recorded; `onComplete` runs in its own callback. */
function recorded(onComplete: (p: Http1Parser) => void = () => undefined): {
  p: Http1Parser
  feed: (s: string) => void
  seen: string[]
} {
  const seen: string[] = []
  const socket = Object.assign(new EventEmitter(), { pause: () => undefined, resume: () => undefined })
  const p: Http1Parser = new Http1Parser('request', 16 * 1024, {
    onReadStart: () => undefined,
    onReadEnd: (e) => void (e && seen.push(`error ${e.code}`)),
    onHead: (h: MessageHead) => {
      seen.push(`${h.method} ${h.url} ${h.fields.toRaw().join(' ')}`)
      return false
    },
    onBody: (b) => void seen.push(`body ${b.toString('latin1')}`),
    onMessageComplete: () => onComplete(p),
  })
  p.readFrom(socket as unknown as Socket)
  return { p, feed: (s) => void socket.emit('data', Buffer.from(s, 'latin1')), seen }
}

t.test("a closed parser's state serves the next one from its start: after an error, mid-head, mid-body", async (t) => {
  const failed = recorded()
  failed.feed('GET / HTTP/1.1\r\nHo st: x\r\n\r\n')
  t.same(failed.seen, ['error HPE_INVALID_HEADER_TOKEN'])
  failed.p.close()
  const midHead = recorded()
  midHead.feed('POST /half HTTP/1.1\r\nHost: a\r\nX-Cut: ab')
  midHead.p.close()
  const midBody = recorded()
  midBody.feed('POST /body HTTP/1.1\r\nContent-Length: 10\r\n\r\nhello')
  midBody.p.close()
  t.same(midBody.seen, ['POST /body Content-Length 10', 'body hello'])
  // Each of these takes one of the three states above; none carries anything of its last use.
  for (let i = 0; i < 4; i++) {
    const next = recorded()
    next.feed(`GET /next${i} HTTP/1.1\r\nHost: deathstar\r\n\r\n`)
    t.same(next.seen, [`GET /next${i} Host deathstar`], `parser ${i} made after the closes`)
    next.p.close()
  }
})

t.test('a parser closed in its own callback keeps its state until llhttp is done with it', async (t) => {
  const state = (p: Http1Parser): number => (p as unknown as { ptr: number }).ptr
  let made: ReturnType<typeof recorded> | null = null
  // As a connection that ends at its first answer: the parser is closed, and a new connection's
  // parser made, while llhttp still runs the first over the rest of its read.
  const first = recorded((p) => {
    if (made !== null) return
    p.close()
    made = recorded()
  })
  first.feed('GET /one HTTP/1.1\r\nHost: a\r\n\r\nPUT /two HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nxyz')
  t.same(
    first.seen,
    ['GET /one Host a', 'PUT /two Host a Content-Length 3', 'body xyz'],
    'the closed parser read the rest of its read',
  )
  t.not(state(made!.p), state(first.p), 'the parser made meanwhile has a state of its own')
  made!.feed('GET /second-connection HTTP/1.1\r\nHost: b\r\n\r\n')
  t.same(made!.seen, ['GET /second-connection Host b'])
  const after = recorded()
  t.equal(state(after.p), state(first.p), 'once llhttp is done with it, the next parser takes it')
  after.feed('GET /after HTTP/1.1\r\nHost: c\r\n\r\n')
  t.same(after.seen, ['GET /after Host c'])
  made!.p.close()
  after.p.close()
})

t.test(
  "parsers made and closed many times over in one turn of the event loop reuse their state (llhttp's memory does not grow)",
  async (t) => {
    // Warm: some states exist to reuse.
    for (let i = 0; i < 4; i++) recorded().p.close()
    const memory = llhttp().fn.memory
    const before = memory.buffer.byteLength
    for (let i = 0; i < 20_000; i++) {
      const r = recorded()
      if (i % 1000 === 0) {
        r.feed('GET / HTTP/1.1\r\nHost: a\r\n\r\n')
        t.equal(r.seen.length, 1)
      }
      r.p.close()
    }
    t.equal(memory.buffer.byteLength, before)
  },
)

t.test(
  'a head cut inside after an empty Transfer-Encoding: node has failed, ours waits for the rest (and refuses it then)',
  async (t) => {
    const bytes = 'GET / HTTP/1.1\r\nTransfer-Encoding: \r\n\r'
    const ours = parser('request')
    ours.feed(bytes)
    t.ok(
      ours.events.every((e) => e[0] === 'begin'),
      'ours: nothing yet but the message begun',
    )
    t.match(nodeParse(bytes).at(-1), ['error'], "node's llhttp: an error already")
    t.ok(refusedAfterParsing(ours.events, bytes), 'the differential accepts the difference')
    ours.feed('\n')
    const head = ours.events.find((e) => e[0] === 'head')
    t.ok(
      head === undefined || refusedAfterParsing(ours.events, bytes),
      'once whole, its head has the empty Transfer-Encoding request-head.ts refuses',
    )
  },
)
