// How steered flows reach the proxy, per node: the netfilter and policy-routing state each mode
// needs in the node's network namespace, set up at start and removed at stop. The TC program
// reads the mode from l7_config.
//
//   tproxy:    skb->mark = proxy port << 16 | 0x200; an iptables TPROXY rule per proxy port in a
//              chain of our own delivers the flow to the transparent listener (2019 design)
//   sk-assign: bpf_sk_assign at TC ingress; only the local route is needed (5.7+ design)
//   dnat:      the destination is rewritten to the proxy on a node address, and to-endpoint
//              reverse-translates replies; the original destination is in the proxymap (past)
//   sockmap:   steered as sk-assign; sock_ops puts both local ends of the connection in a
//              sockhash and sk_msg moves payload socket to socket (cgroup.ts attaches them)
//   sk-lookup: TC only marks the packet; an sk_lookup program on the namespace selects the
//              proxy's registered socket when the kernel looks one up for it (5.9+ design)
// All but dnat need `fwmark 0x200/0xf00 -> local route`, so steered packets are delivered
// locally; dnat needs nothing: its packets are addressed to the node.

import { BpfError } from '../libbpf.js'

export const REDIRECT_MODES = ['tproxy', 'sk-assign', 'dnat', 'sockmap', 'sk-lookup'] as const
export type RedirectMode = (typeof REDIRECT_MODES)[number]

/** The modes whose node runs progs/sk-lookup.bpf.c: to steer (sk-lookup), or for TIME_WAIT (the sk_assign ones). */
export function usesSkLookup(mode: RedirectMode): boolean {
  return mode === 'sk-lookup' || mode === 'sk-assign' || mode === 'sockmap'
}

export const ROUTE_TABLE = 2004
export const RULE_PREF = 9000
export const CHAIN = 'L7PROXY_TPROXY'
const MARK = 0x200
const MARK_MASK = 0xf00

export type Run = (argv: string[]) => { code: number; stderr: string }

export function parseMode(s: string): RedirectMode {
  if ((REDIRECT_MODES as readonly string[]).includes(s)) return s as RedirectMode
  throw new BpfError('EATTACH', `unknown redirect mode '${s}' (expected one of: ${REDIRECT_MODES.join(', ')})`)
}

function must(run: Run, argv: string[]): void {
  const r = run(argv)
  if (r.code !== 0) throw new BpfError('EATTACH', `'${argv.join(' ')}' failed: ${r.stderr.trim()}`)
}

/** Our policy rule and local route, exactly: only these are ever added or deleted (others at the same preference or in the table stay). */
const RULE = ['fwmark', `${MARK}/${MARK_MASK}`, 'lookup', String(ROUTE_TABLE), 'pref', String(RULE_PREF)]
const ROUTE = ['local', '0.0.0.0/0', 'dev', 'lo', 'table', String(ROUTE_TABLE)]

/** Sets up the node state `mode` needs; idempotent (removes ours first, as a crashed agent may have left it). */
export function setupMode(mode: RedirectMode, run: Run, proxyPorts: readonly number[], proxyAddr = '127.0.0.1'): void {
  teardownModes(run)
  ensureMode(mode, run, proxyPorts, proxyAddr)
}

/** Runs a command whose effect may be in place already ("File exists" is fine). */
function mustOrExists(run: Run, argv: string[]): void {
  const r = run(argv)
  if (r.code !== 0 && !/exists/i.test(r.stderr))
    throw new BpfError('EATTACH', `'${argv.join(' ')}' failed: ${r.stderr.trim()}`)
}

/** Adds an iptables rule unless it is there (-C). */
function ensureRule(run: Run, table: string, op: '-I' | '-A', chain: string, rule: string[]): void {
  if (run(['iptables', '-w', '-t', table, '-C', chain, ...rule]).code !== 0)
    must(run, ['iptables', '-w', '-t', table, op, chain, ...rule])
}

/**
 * Adds what of `mode`'s node state is missing and removes nothing: an agent taking over from one
 * that runs the same mode keeps every rule in place (a teardown and setup would be a gap).
 */
export function ensureMode(mode: RedirectMode, run: Run, proxyPorts: readonly number[], proxyAddr = '127.0.0.1'): void {
  if (mode === 'dnat') return
  mustOrExists(run, ['ip', 'rule', 'add', ...RULE])
  mustOrExists(run, ['ip', 'route', 'add', ...ROUTE])
  if (mode !== 'tproxy') return
  mustOrExists(run, ['iptables', '-w', '-t', 'mangle', '-N', CHAIN])
  ensureRule(run, 'mangle', '-I', 'PREROUTING', ['-j', CHAIN])
  for (const port of proxyPorts) {
    for (const proto of ['tcp', 'udp']) {
      ensureRule(run, 'mangle', '-A', CHAIN, [
        '-p',
        proto,
        '-m',
        'mark',
        '--mark',
        `0x${((port << 16) | MARK).toString(16)}/0xffff${MARK_MASK.toString(16).padStart(4, '0')}`,
        '-j',
        'TPROXY',
        '--on-port',
        String(port),
        '--on-ip',
        proxyAddr,
        '--tproxy-mark',
        `${MARK}/${MARK_MASK}`,
      ])
    }
  }
}

/** Removes what any mode set up, and nothing else: our rule, our route, our chain; missing pieces are fine. */
export function teardownModes(run: Run): void {
  // One copy per call, until none is left; bounded in case something keeps adding them.
  for (let i = 0; i < 16 && run(['ip', 'rule', 'del', ...RULE]).code === 0; i++);
  for (let i = 0; i < 16 && run(['ip', 'route', 'del', ...ROUTE]).code === 0; i++);
  run(['iptables', '-w', '-t', 'mangle', '-D', 'PREROUTING', '-j', CHAIN])
  run(['iptables', '-w', '-t', 'mangle', '-F', CHAIN])
  run(['iptables', '-w', '-t', 'mangle', '-X', CHAIN])
}
