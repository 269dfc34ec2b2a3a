// A thread's log lines as chunks of bytes: whole lines only, in order, each chunk's memory its
// own (so it can be transferred) and not much larger than its bytes.

import { MessageChannel } from 'node:worker_threads'
import t from 'tap'
import { LineChunks } from '../proxy/agent/line-chunks.js'

function collect(): { chunks: Array<{ bytes: Buffer; lines: number }>; lines: LineChunks } {
  const chunks: Array<{ bytes: Buffer; lines: number }> = []
  return { chunks, lines: new LineChunks((bytes, lines) => void chunks.push({ bytes, lines })) }
}

t.test('lines come out whole and in order, a chunk at a time, with their count', async (t) => {
  const { chunks, lines } = collect()
  const written: string[] = []
  for (let i = 0; i < 2000; i++) {
    const line = `{"n":${i},"path":"/v1/${'é'.repeat(i % 7)}${'x'.repeat(i % 200)}"}\n`
    written.push(line)
    lines.write(line)
  }
  lines.flush()
  t.ok(chunks.length > 1, `${chunks.length} chunks`)
  t.equal(Buffer.concat(chunks.map((c) => c.bytes)).toString(), written.join(''), 'the same text, UTF-8')
  t.ok(
    chunks.every((c) => c.bytes.toString().endsWith('\n') && c.bytes.toString().split('\n').length - 1 === c.lines),
    'no line split between chunks; counts right',
  )
  t.ok(
    chunks.every((c) => c.bytes.byteOffset === 0 && c.bytes.buffer.byteLength <= 2 * c.bytes.length),
    'each holds at most twice its bytes, from its start',
  )
})

t.test('a quiet flush copies its few bytes out; a line too long for a chunk goes alone', async (t) => {
  const { chunks, lines } = collect()
  lines.write('{"a":1}\n')
  lines.flush()
  lines.flush()
  t.equal(chunks.length, 1, 'nothing to flush: nothing delivered')
  t.equal(chunks[0]!.bytes.buffer.byteLength, 8, 'one short line keeps 8 bytes, not a chunk')
  const long = `{"x":"${'y'.repeat(100_000)}"}\n`
  lines.write('{"b":2}\n')
  lines.write(long)
  t.same(
    chunks.slice(1).map((c) => [c.bytes.length, c.lines]),
    [
      [8, 1],
      [Buffer.byteLength(long), 1],
    ],
    'what was pending first, then the long line by itself',
  )
})

t.test('a chunk can be transferred to another thread', async (t) => {
  const { chunks, lines } = collect()
  lines.write('{"moved":true}\n')
  lines.flush()
  const { port1, port2 } = new MessageChannel()
  const got = new Promise<Uint8Array>((r) => port2.once('message', (m: Uint8Array) => r(m)))
  const c = chunks[0]!.bytes
  port1.postMessage(c, [c.buffer as ArrayBuffer])
  t.equal(c.buffer.byteLength, 0, 'the sender no longer holds it')
  t.equal(Buffer.from(await got).toString(), '{"moved":true}\n')
  port1.close()
})
