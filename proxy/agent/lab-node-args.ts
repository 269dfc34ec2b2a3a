// The lab node process's command line (what `l7proxy agent` and the tests pass to lab-node.js),
// read and checked whole: every value typed, or one usage line. Pure.

import { availableParallelism } from 'node:os'
import { parseArgs } from 'node:util'
import pino from 'pino'
import { LAB_PROXY_PORTS } from './lab-node-process.js'

export const LAB_NODE_USAGE =
  'usage: lab-node --mode M --pin DIR (--policy FILE | --policy-dir DIR) [--http builtin|external] [--dns builtin|external] [--threads N (1-64)] [--dns-threads N (1-64)] [--sockmap-cgroup NAME] [--log FILE] [--admin SOCKET] [--http-port P] [--dns-port P] [--log-level L] [--dns-reject REFUSED|NXDOMAIN] [--dns-min-ttl S] [--dns-max-ips N] [--dns-max-delay MS] [--state DIR] [--ca-dir DIR] [--metrics-fd N] [--endpoints FILE]'

export interface LabNodeArgs {
  /** Checked by the datapath (parseMode). */
  mode: string
  policy: string | null
  policyDir: string | null
  pin: string
  /** 'external': the port is left to another proxy (a benchmark's peer). */
  http: 'builtin' | 'external'
  dns: 'builtin' | 'external'
  sockmapCgroup: string | null
  log: string | null
  /** HTTP proxy threads (default: one per core). */
  threads: number
  /**
   * Threads serving the DNS proxy's UDP (default 1, as dnsdist's and unbound's: one thread
   * serves well over 100k queries/s, and a second one costs each query more CPU than it saves).
   */
  dnsThreads: number
  admin: string | null
  httpPort: number
  dnsPort: number
  logLevel: string
  dnsReject: 'REFUSED' | 'NXDOMAIN'
  dnsMinTtlSeconds: number
  dnsMaxIps: number
  /** How long another thread's DNS proxy holds an answer for the main thread to write what it taught. */
  dnsMaxDelayMs: number
  state: string | null
  caDir: string | null
  metricsFd: number | null
  endpoints: string | null
}

export class LabNodeUsageError extends Error {
  readonly code = 'EUSAGE'
}

function integer(text: string, min: number, max: number, what: string): number {
  const n = Number(text)
  if (!/^\d+$/.test(text) || n < min || n > max) throw new LabNodeUsageError(`${what}: expected an integer from ${min} to ${max}, got '${text}'`)
  return n
}

function oneOf<T extends string>(text: string, allowed: readonly T[], what: string): T {
  if (!(allowed as readonly string[]).includes(text)) throw new LabNodeUsageError(`${what}: expected ${allowed.join(' or ')}, got '${text}'`)
  return text as T
}

/** Throws LabNodeUsageError saying what is wrong. */
export function parseLabNodeArgs(argv: string[]): LabNodeArgs {
  let values
  try {
    ;({ values } = parseArgs({
      args: argv,
      options: {
        mode: { type: 'string' },
        policy: { type: 'string' },
        'policy-dir': { type: 'string' },
        pin: { type: 'string' },
        http: { type: 'string', default: 'builtin' },
        dns: { type: 'string', default: 'builtin' },
        'sockmap-cgroup': { type: 'string' },
        log: { type: 'string' },
        threads: { type: 'string', default: String(availableParallelism()) },
        'dns-threads': { type: 'string', default: '1' },
        admin: { type: 'string' },
        'http-port': { type: 'string', default: String(LAB_PROXY_PORTS.http) },
        'dns-port': { type: 'string', default: String(LAB_PROXY_PORTS.dns) },
        'log-level': { type: 'string', default: 'info' },
        'dns-reject': { type: 'string', default: 'REFUSED' },
        'dns-min-ttl': { type: 'string', default: '3600' },
        'dns-max-ips': { type: 'string', default: '50' },
        'dns-max-delay': { type: 'string', default: '100' },
        state: { type: 'string' },
        'ca-dir': { type: 'string' },
        'metrics-fd': { type: 'string' },
        endpoints: { type: 'string' },
      },
    }))
  } catch (e) {
    throw new LabNodeUsageError((e as Error).message)
  }
  if (!values.mode) throw new LabNodeUsageError('--mode is required')
  if (!values.pin) throw new LabNodeUsageError('--pin is required')
  if (!values.policy && !values['policy-dir']) throw new LabNodeUsageError('--policy or --policy-dir is required')
  const logLevel = values['log-level']!
  if (pino.levels.values[logLevel] === undefined) throw new LabNodeUsageError(`--log-level: no level '${logLevel}'`)
  const httpPort = integer(values['http-port']!, 1, 65535, '--http-port')
  const dnsPort = integer(values['dns-port']!, 1, 65535, '--dns-port')
  return {
    mode: values.mode,
    policy: values.policy ?? null,
    policyDir: values['policy-dir'] ?? null,
    pin: values.pin,
    http: oneOf(values.http!, ['builtin', 'external'] as const, '--http'),
    dns: oneOf(values.dns!, ['builtin', 'external'] as const, '--dns'),
    sockmapCgroup: values['sockmap-cgroup'] ?? null,
    log: values.log ?? null,
    threads: integer(values.threads!, 1, 64, '--threads'),
    dnsThreads: integer(values['dns-threads']!, 1, 64, '--dns-threads'),
    admin: values.admin ?? null,
    httpPort,
    dnsPort,
    logLevel,
    dnsReject: oneOf(values['dns-reject']!, ['REFUSED', 'NXDOMAIN'] as const, '--dns-reject'),
    dnsMinTtlSeconds: integer(values['dns-min-ttl']!, 0, 604_800, '--dns-min-ttl'),
    dnsMaxIps: integer(values['dns-max-ips']!, 1, 10_000, '--dns-max-ips'),
    dnsMaxDelayMs: integer(values['dns-max-delay']!, 1, 10_000, '--dns-max-delay'),
    state: values.state ?? null,
    caDir: values['ca-dir'] ?? null,
    // 0-2 are stdio: a listening socket handed over comes after them.
    metricsFd: values['metrics-fd'] === undefined ? null : integer(values['metrics-fd'], 3, 9999, '--metrics-fd'),
    endpoints: values.endpoints ?? null,
  }
}
