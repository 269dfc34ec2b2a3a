// What a connection flood costs the node agent in memory, and whether it gives it back:
//   npm run bench:overload [-- --connections N --clients C --kinds idle,slow,inflight --after S,S... --lab NAME --out FILE]
//
// For each kind of connection, a fresh agent (sk-assign, the example policy, no per-source or
// per-identity budget: the node's budget, from the open-file limit, is what binds) and a flood
// of N connections from the tiefighter pod (C flood-client processes, so no client runs out of
// files): `idle` kept alive after one request (its upstream given back after a second), `slow` a request head
// still arriving, `inflight` a request forwarded whose body is still coming. The agent holds
// what its budget allows and resets the rest. Its resident memory (VmRSS) is read before the
// flood (after a warm-up), while the connections are held, and --after seconds after they closed
// (by default 1, 10, 30 and 45: the agent gives memory back at once and again 8-10 s later);
// bytes per connection is (held - before) / connections held. Pressure is set not to act (it
// would close the flood's connections before they are measured).

import { execFileSync, spawn } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { netnsArgv } from '../lab/netns.js'
import { startLabNode } from '../lab/node-agent.js'
import { hostNetns } from '../lab/topology.js'
import { distPath, projectRoot } from '../lib/project-root.js'
import { renderTable } from '../proxy/cli/table.js'
import { benchOptions, benchPin, inLabRounds, runBench, UsageError, wholeOption, writeResult } from './bench-support.js'

const USAGE =
  'usage: npm run bench:overload [-- --connections N --clients C --kinds idle,slow,inflight --after S,S... --lab NAME --out FILE]'
const KINDS = ['idle', 'slow', 'inflight'] as const
type Kind = (typeof KINDS)[number]
const DEATHSTAR = '198.18.2.10:80'

interface Flood {
  kind: Kind
  attempted: number
  held: number
  /** Connections the agent refused (reset), from its status. */
  refused: number
  fileLimit: number
  connectionsPerNode: number
  /** after: by seconds since the flood's connections closed. */
  rssMB: { before: number; held: number; after: Record<string, number> }
  /** Each thread's V8 heap (MB) at the same moments (the other threads' as they last reported it). */
  heapMB: { before: number[]; held: number[]; after: number[] }
  bytesPerConnection: number
  /** What the agent logged about overload meanwhile (refusal lines aside), ms after the flood closed. */
  agentEvents: Array<{ ms: number; msg: string; rssMB?: number }>
}

function rssBytes(pid: number): number {
  const kb = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  if (!kb) throw new Error(`no VmRSS for ${pid}`)
  return Number(kb[1]) * 1024
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))
const mb = (b: number): number => Math.round((b / 2 ** 20) * 10) / 10

interface Status {
  overload: {
    fileLimit: number
    limits: { connectionsPerNode: number }
    open: { connections: number }
    refused: { connections: Record<string, number> }
    heapBytesByThread: number[]
  }
}

function status(socket: string): Status {
  return JSON.parse(
    execFileSync(process.execPath, [distPath('proxy/cli/main.js'), 'status', '--socket', socket, '-o', 'json'], {
      encoding: 'utf8',
    }),
  ) as Status
}

/** C flood clients holding `per` connections of `kind` each; resolves with them once all hold theirs. */
async function startClients(
  lab: string,
  kind: Kind,
  clients: number,
  per: number,
): Promise<{ held: number; end: () => Promise<void> }> {
  // A wide port range, so the client side never runs out of ports before the agent's budget.
  const argv = [
    'sh',
    '-c',
    'sysctl -qw net.ipv4.ip_local_port_range="1024 65000" && exec "$@"',
    'flood',
    process.execPath,
    distPath('bench/flood-client.js'),
    'flood',
    '--http',
    DEATHSTAR,
    `--${kind}`,
    String(per),
    '--hold',
  ]
  const procs = Array.from({ length: clients }, () => {
    const [cmd, ...args] = netnsArgv(hostNetns(lab, 'tiefighter'), argv)
    return spawn(cmd!, args, { stdio: ['pipe', 'pipe', 'inherit'] })
  })
  const helds = await Promise.all(
    procs.map(
      (p) =>
        new Promise<number>((resolve, reject) => {
          createInterface({ input: p.stdout! }).once('line', (l) => resolve((JSON.parse(l) as { held: number }).held))
          p.once('exit', (code) => reject(new Error(`flood client exited (${code}) before holding its connections`)))
        }),
    ),
  )
  const end = async (): Promise<void> => {
    await Promise.all(
      procs.map(
        (p) => new Promise<void>((r) => (p.exitCode !== null ? r() : (p.once('exit', () => r()), p.stdin!.end()))),
      ),
    )
  }
  return { held: helds.reduce((a, n) => a + n, 0), end }
}

async function main(): Promise<void> {
  const values = benchOptions({
    connections: '50000',
    clients: '4',
    kinds: KINDS.join(','),
    after: '1,10,30,45',
    lab: 'bovl',
    out: 'bench-results/overload.json',
  })
  const connections = wholeOption(values, 'connections', 1, 1_000_000)
  const clients = wholeOption(values, 'clients', 1, 64)
  const kinds = values.kinds.split(',') as Kind[]
  for (const k of kinds)
    if (!KINDS.includes(k)) throw new UsageError(`--kinds: unknown kind '${k}'; expected some of ${KINDS.join(', ')}`)
  // When memory is read after the flood's connections closed, in seconds.
  const afterSeconds = values.after.split(',').map(Number)
  if (afterSeconds.some((s, i) => !Number.isInteger(s) || s < 0 || s > 600 || (i > 0 && s <= afterSeconds[i - 1]!)))
    throw new UsageError(`--after: seconds in increasing order (0-600), got '${values.after}'`)
  const lab = values.lab
  const pin = benchPin(lab, 'overload')
  const results = await inLabRounds({
    lab,
    tmpPrefix: 'l7-bench-overload-',
    scenarios: kinds,
    rounds: 1,
    pins: [pin],
    describe: (f: Flood) => `${f.held} held of ${f.attempted}, ${Math.round(f.bytesPerConnection)} bytes each`,
    measure: async (kind, dir, hold): Promise<Flood> => {
      const socket = join(dir, `${kind}.sock`)
      const policyFile = join(dir, 'star-wars.yaml')
      writeFileSync(policyFile, readFileSync(join(projectRoot(), 'policy/examples/star-wars.yaml')))
      const node = await startLabNode({
        lab,
        mode: 'sk-assign',
        policyFile,
        pin,
        admin: socket,
        logFile: join(dir, `${kind}.log`),
        overload: {
          connections: { perSource: 0, perIdentity: 0 },
          pressure: { connectionsPercent: 100, memoryMB: 1 << 20, headersTimeoutMs: 10_000, idleTimeoutMs: 60_000 },
        },
      })
      hold(() => node.stop().then(() => undefined))
      try {
        // Warm up: every code path a flood takes has run once, and the heap has settled.
        const warm = await startClients(lab, kind, 1, 200)
        await warm.end()
        await sleep(3_000)
        const before = rssBytes(node.pid)
        const heapBefore = status(socket).overload.heapBytesByThread
        const flood = await startClients(lab, kind, clients, Math.ceil(connections / clients))
        // Idle connections give their upstream back after a second or two; the other threads
        // report their heaps every second.
        await sleep(3_000)
        const during = rssBytes(node.pid)
        const s = status(socket)
        const open = s.overload.open.connections
        await flood.end()
        const closedAt = Date.now()
        for (let i = 0; i < 100 && status(socket).overload.open.connections > 0; i++) await sleep(100)
        const after: Record<string, number> = {}
        let waited = 0
        for (const at of afterSeconds) {
          await sleep((at - waited) * 1000)
          waited = at
          after[`${at}s`] = mb(rssBytes(node.pid))
        }
        return {
          kind,
          attempted: Math.ceil(connections / clients) * clients,
          held: open,
          refused: Object.values(status(socket).overload.refused.connections).reduce((a, n) => a + n, 0),
          fileLimit: s.overload.fileLimit,
          connectionsPerNode: s.overload.limits.connectionsPerNode,
          rssMB: { before: mb(before), held: mb(during), after },
          heapMB: {
            before: heapBefore.map(mb),
            held: s.overload.heapBytesByThread.map(mb),
            after: status(socket).overload.heapBytesByThread.map(mb),
          },
          bytesPerConnection: open > 0 ? (during - before) / open : 0,
          agentEvents: readFileSync(join(dir, `${kind}.log`), 'utf8')
            .split('\n')
            .filter((l) => l.includes('"msg":"overload:') && !l.includes('"overload: refused"'))
            .map((l) => JSON.parse(l) as { time: number; msg: string; rssMB?: number })
            .map((e) => ({ ms: e.time - closedAt, msg: e.msg, ...(e.rssMB !== undefined ? { rssMB: e.rssMB } : {}) })),
        }
      } finally {
        await node.stop()
        hold(null)
      }
    },
  })
  const rows = kinds.map((k) => results[k][0]!)
  const out = writeResult(values.out, { benchmark: 'overload', connections, clients, floods: rows })
  process.stdout.write(
    renderTable(
      [
        'kind',
        'held',
        'refused',
        'bytes/connection',
        'RSS before MB',
        'held MB',
        ...afterSeconds.map((s) => `+${s} s MB`),
      ],
      rows.map((r) => [
        r.kind,
        String(r.held),
        String(r.refused),
        String(Math.round(r.bytesPerConnection)),
        String(r.rssMB.before),
        String(r.rssMB.held),
        ...afterSeconds.map((s) => String(r.rssMB.after[`${s}s`])),
      ]),
    ),
  )
  process.stdout.write(
    `${connections} connections attempted per kind from ${clients} clients; the agent's file limit ${rows[0]?.fileLimit}, node budget ${rows[0]?.connectionsPerNode}; wrote ${out}\n`,
  )
}

runBench('bench:overload', USAGE, main)
