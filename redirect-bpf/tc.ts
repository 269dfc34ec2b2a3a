// Attaching programs to an interface's clsact qdisc (TC ingress or egress), in the caller's
// network namespace. l7proxy uses one fixed handle and priority per hook, so attaching again
// replaces its program atomically and detaching finds it.

import { cString, libc } from '../lib/libc.js'
import { BPF_TC_EGRESS, BPF_TC_F_REPLACE, BPF_TC_INGRESS, BpfError, check, libbpf, TC_HOOK, TC_OPTS } from './libbpf.js'

export type TcDirection = 'ingress' | 'egress'

export const L7PROXY_TC_HANDLE = 0x17
export const L7PROXY_TC_PRIORITY = 1

export function ifindexOf(ifname: string): number {
  const i = libc().if_nametoindex(cString(ifname)) as number
  if (i === 0) throw new BpfError('EATTACH', `no interface named ${ifname} in this network namespace`)
  return i
}

function hook(ifindex: number, direction: TcDirection): Buffer {
  const h = Buffer.alloc(TC_HOOK.size)
  h.writeBigUInt64LE(BigInt(TC_HOOK.size), 0)
  h.writeInt32LE(ifindex, TC_HOOK.ifindex)
  h.writeUInt32LE(direction === 'ingress' ? BPF_TC_INGRESS : BPF_TC_EGRESS, TC_HOOK.attachPoint)
  return h
}

function opts(progFd: number, flags: number): Buffer {
  const o = Buffer.alloc(TC_OPTS.size)
  o.writeBigUInt64LE(BigInt(TC_OPTS.size), 0)
  o.writeInt32LE(progFd, TC_OPTS.progFd)
  o.writeUInt32LE(flags, TC_OPTS.flags)
  o.writeUInt32LE(L7PROXY_TC_HANDLE, TC_OPTS.handle)
  o.writeUInt32LE(L7PROXY_TC_PRIORITY, TC_OPTS.priority)
  return o
}

/**
 * Attaches (or replaces) l7proxy's program on `ifindex`, creating the clsact qdisc if needed;
 * returns whether it created it (only then should removeClsact take it away again).
 */
export function attachTc(ifindex: number, direction: TcDirection, progFd: number): boolean {
  const lib = libbpf()
  const h = hook(ifindex, direction)
  const rc = lib.bpf_tc_hook_create(h) as number
  if (rc !== -17) check(rc, 'EATTACH', `creating clsact on ifindex ${ifindex}`) // EEXIST: already there
  check(
    lib.bpf_tc_attach(h, opts(progFd, BPF_TC_F_REPLACE)) as number,
    'EATTACH',
    `attaching to ${direction} of ifindex ${ifindex}`,
  )
  return rc === 0
}

/** Removes the clsact qdisc of `ifindex` with every filter on it: only for one l7proxy made. */
export function removeClsact(ifindex: number): void {
  const h = hook(ifindex, 'ingress')
  h.writeUInt32LE(BPF_TC_INGRESS | BPF_TC_EGRESS, TC_HOOK.attachPoint)
  const rc = libbpf().bpf_tc_hook_destroy(h) as number
  if (rc !== -2 && rc !== -22) check(rc, 'EATTACH', `removing clsact from ifindex ${ifindex}`)
}

/** The id of l7proxy's program on that hook, or null when none is attached. */
export function queryTc(ifindex: number, direction: TcDirection): number | null {
  const o = opts(0, 0)
  const rc = libbpf().bpf_tc_query(hook(ifindex, direction), o) as number
  if (rc === -2 || rc === -22) return null
  check(rc, 'EATTACH', `querying ${direction} of ifindex ${ifindex}`)
  return o.readUInt32LE(TC_OPTS.progId)
}

/** Detaches l7proxy's program; false when none was attached. */
export function detachTc(ifindex: number, direction: TcDirection): boolean {
  const rc = libbpf().bpf_tc_detach(hook(ifindex, direction), opts(0, 0)) as number
  if (rc === -2 || rc === -22) return false
  check(rc, 'EATTACH', `detaching from ${direction} of ifindex ${ifindex}`)
  return true
}
