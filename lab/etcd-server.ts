// One etcd server (Debian's etcd-server) for a lab's cluster or a test: data in a directory of
// ours, listening on one address (a lab's underlay, or loopback), started detached and ended by
// its PID. restart() starts it again on the same data, as after an outage.

import { spawn } from 'node:child_process'
import { closeSync, mkdirSync, openSync } from 'node:fs'
import { join } from 'node:path'
import { LabError } from './errors.js'
import { findExecutable, isAlive, spawnDetachedIn, stopProcess, waitListening } from './netns.js'

export interface EtcdOptions {
  /** Data and log live here. */
  dir: string
  address: string
  clientPort: number
  peerPort: number
  /** The namespace it runs in (null: this process's). */
  netns: string | null
  /** Serve clients over TLS with this certificate and key (PEM files). */
  tls?: { cert: string; key: string }
}

export interface EtcdServer {
  readonly clientUrl: string
  pid(): number
  /** Ends it (SIGTERM, then SIGKILL); its data stays. */
  stop(): Promise<void>
  /** Starts it again on its data. */
  restart(): Promise<void>
}

function spawnDetached(argv: readonly string[], logFile: string): Promise<number> {
  const out = openSync(logFile, 'a')
  try {
    const child = spawn(argv[0]!, argv.slice(1), { detached: true, stdio: ['ignore', out, out] })
    return new Promise((resolve, reject) => {
      child.once('error', (e) => reject(new LabError('ENOCMD', `cannot start etcd: ${e.message}`)))
      child.once('spawn', () => {
        child.unref()
        resolve(child.pid!)
      })
    })
  } finally {
    closeSync(out)
  }
}

export async function startEtcd(o: EtcdOptions): Promise<EtcdServer> {
  if (!findExecutable('etcd'))
    throw new LabError('ENOCMD', 'etcd is not installed (Debian package etcd-server); run scripts/setup.sh')
  mkdirSync(o.dir, { recursive: true })
  const clientUrl = `${o.tls ? 'https' : 'http'}://${o.address}:${o.clientPort}`
  const peerUrl = `http://${o.address}:${o.peerPort}`
  const log = join(o.dir, 'etcd.log')
  const argv = [
    'etcd',
    '--name=lab',
    `--data-dir=${join(o.dir, 'data')}`,
    `--listen-client-urls=${clientUrl}`,
    `--advertise-client-urls=${clientUrl}`,
    `--listen-peer-urls=${peerUrl}`,
    `--initial-advertise-peer-urls=${peerUrl}`,
    `--initial-cluster=lab=${peerUrl}`,
    '--initial-cluster-state=new',
    // Shorter raft timing than the defaults: leases down to 1 s, and a restart is quickly leader.
    '--heartbeat-interval=50',
    '--election-timeout=500',
    '--logger=zap',
    '--log-level=warn',
    ...(o.tls ? [`--cert-file=${o.tls.cert}`, `--key-file=${o.tls.key}`] : []),
  ]
  let pid = 0
  const up = async (): Promise<void> => {
    pid = o.netns === null ? await spawnDetached(argv, log) : await spawnDetachedIn(o.netns, argv, log)
    await waitListening({ ns: o.netns, port: o.clientPort, proto: 'tcp', pid, logFile: log, what: 'etcd' })
  }
  await up()
  return {
    clientUrl,
    pid: () => pid,
    stop: () => stopProcess(pid),
    restart: async () => {
      if (isAlive(pid)) throw new LabError('EETCD', `etcd (pid ${pid}) is still running`)
      await up()
    },
  }
}
