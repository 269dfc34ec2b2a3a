// gRPC through the proxy in the lab, steered by the kernel: the lab's @grpc/grpc-js client in
// the tiefighter's namespace calls the gRPC deathstar (198.18.2.20:50051) under the example
// policy, whose deathstar-grpc rules allow every method but FireExhaustPort.

import { join } from 'node:path'
import t, { type Test } from 'tap'
import { startLabNode } from '../lab/node-agent.js'
import { distPath, projectRoot } from '../lib/project-root.js'
import { kernelTest } from './fixtures/kernel.js'
import { type LabHandle, useLab } from './fixtures/lab.js'

const TARGET = '198.18.2.20:50051'
const PERMISSION_DENIED = 7
const DEADLINE_EXCEEDED = 4

interface CallResult {
  ok: boolean
  code?: number
  details?: string
  reply?: Record<string, unknown>
  trailers?: Record<string, string>
}

async function withProxy(
  t: Test,
  mode: string,
): Promise<{
  lab: LabHandle
  call: (host: string, args: string[]) => Promise<CallResult>
  stop: () => Promise<number | null>
  lines: () => Array<Record<string, unknown>>
}> {
  const lab = await useLab(t)
  const pin = `/run/l7proxy/test-bpffs-${lab.name}`
  const node = await startLabNode({
    lab: lab.name,
    mode,
    policyFile: join(projectRoot(), 'policy/examples/star-wars.yaml'),
    pin,
  })
  t.teardown(() => node.stop())
  const call = async (host: string, args: string[]): Promise<CallResult> => {
    const r = await lab.exec(
      host,
      [process.execPath, distPath('lab/clients/grpc-call.js'), '--target', TARGET, ...args],
      { timeoutMs: 30_000 },
    )
    if (r.code !== 0) return { ok: false, details: `exit ${r.code}: ${r.stderr}` }
    return JSON.parse(r.stdout) as CallResult
  }
  return { lab, call, stop: () => node.stop(), lines: () => node.lines() }
}

/** The proxy's lines about HTTP/2 streams. */
function streamLines(lines: Array<Record<string, unknown>>): Array<Record<string, unknown>> {
  return lines.filter((l) => l.httpVersion === '2' && typeof l.grpcMethod === 'string')
}

kernelTest(
  t,
  'grpc in the lab (sk-assign): every call kind, metadata, trailers, 4 MB, deadlines, a denied method',
  async (t) => {
    const p = await withProxy(t, 'sk-assign')
    const land = await p.call('tiefighter', ['--ship', 'tf-7', '--metadata', 'x-fleet=black', '--deadline-ms', '4000'])
    t.equal(land.ok, true, JSON.stringify(land))
    t.equal(land.reply?.message, 'Ship landed (tf-7)', 'unary: the server answered')
    t.equal(
      (land.reply?.metadata as Record<string, string> | undefined)?.['x-fleet'],
      'black',
      'request metadata arrived',
    )
    t.equal(land.trailers?.['x-landed-ship'], 'tf-7', 'trailing metadata came back')
    const deadline = Number(land.reply?.deadlineMs)
    t.ok(deadline > 0 && deadline <= 4000, `the server saw the client's deadline (${deadline} ms left)`)

    const denied = await p.call('tiefighter', ['--method', 'FireExhaustPort'])
    t.equal(denied.code, PERMISSION_DENIED, 'FireExhaustPort: PERMISSION_DENIED')
    t.match(
      denied.details,
      /l7proxy: access denied by policy .*CiliumNetworkPolicy\/default\/deathstar-grpc/,
      `with a message naming the policy: ${denied.details}`,
    )

    const ships = await p.call('tiefighter', ['--method', 'ListShips', '--count', '5000'])
    t.match(ships, { ok: true, reply: { received: 5000, last: { index: 4999 } } }, 'server-streaming: 5000 messages')
    const logs = await p.call('tiefighter', ['--method', 'UploadLogs', '--count', '3000'])
    t.match(logs, { ok: true, reply: { lines: 3000 } }, 'client-streaming: 3000 messages')
    const chat = await p.call('tiefighter', ['--method', 'Chat', '--count', '50'])
    t.match(chat, { ok: true, reply: { echoes: 50, last: { text: 'echo: message 49' } } }, 'bidi: 50 round trips')

    const big = await p.call('tiefighter', ['--payload-bytes', String(4 * 1024 * 1024)])
    t.equal(big.reply?.payloadBytes, 4 * 1024 * 1024, 'a 4 MB message arrived whole')
    const started = Date.now()
    const late = await p.call('tiefighter', ['--delay-ms', '5000', '--deadline-ms', '400'])
    t.equal(late.code, DEADLINE_EXCEEDED, 'a call past its deadline: DEADLINE_EXCEEDED')
    t.ok(Date.now() - started < 4000, 'at the deadline')

    const xwing = await p.call('xwing', ['--deadline-ms', '1500'])
    t.equal(xwing.ok, false, 'the xwing is dropped in the kernel (no rule lets it reach the gRPC deathstar)')
    t.not(xwing.code, PERMISSION_DENIED)

    t.equal(await p.stop(), 0)
    const lines = streamLines(p.lines())
    t.match(
      lines.find((l) => l.grpcMethod === 'FireExhaustPort'),
      {
        verdict: 'denied',
        grpcService: 'empire.Deathstar',
        grpcStatus: 7,
        source: /^198\.18\.1\.10:/,
        destination: TARGET,
      },
    )
    t.match(
      lines.find((l) => l.grpcMethod === 'ListShips'),
      { verdict: 'allowed', grpcStatus: 0, rules: ['CiliumNetworkPolicy/default/deathstar-grpc'] },
    )
    t.equal(lines.length, 7, 'one line for each of the seven calls that reached the proxy')
  },
)

for (const mode of ['tproxy', 'dnat', 'sk-lookup'] as const) {
  kernelTest(t, `grpc in the lab (${mode}): an allowed call works, a denied one is PERMISSION_DENIED`, async (t) => {
    const p = await withProxy(t, mode)
    const land = await p.call('tiefighter', [])
    t.equal(land.reply?.message, 'Ship landed (tiefighter)', JSON.stringify(land))
    const chat = await p.call('tiefighter', ['--method', 'Chat', '--count', '5'])
    t.match(chat, { ok: true, reply: { echoes: 5 } })
    const denied = await p.call('tiefighter', ['--method', 'FireExhaustPort'])
    t.equal(denied.code, PERMISSION_DENIED)
    t.equal(await p.stop(), 0)
    t.same(
      streamLines(p.lines())
        .map((l) => l.grpcMethod)
        .sort(),
      ['Chat', 'FireExhaustPort', 'RequestLanding'],
    )
  })
}
